"""Bookkeeping shared by the built-in runtimes: per-attempt report sequencing and the table.

:class:`Attempt` numbers and delivers one attempt's reports (always from the attempt's own
driver task, which is what makes delivery serial and ordered) and remembers the final one.
:class:`AttemptTable` finds attempts by id, keeps a bounded number of finished ones for
:meth:`~cronloop.runtimes.base.Runtime.wait` and ``logs``, and implements those two methods.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Generic, TypeVar

from cronloop.api.phase import Phase
from cronloop.runtimes.base import AttemptExistsError, ReportCallback, UnknownAttemptError
from cronloop.runtimes.logfile import AttemptLog
from cronloop.runtimes.report import AttemptHandle, AttemptReport
from cronloop.runtimes.spec import AttemptSpec

logger = logging.getLogger("cronloop.runtimes")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Attempt:
    """One started attempt: its spec, log, report sequence and completion."""

    def __init__(self, spec: AttemptSpec, callback: ReportCallback) -> None:
        self.spec = spec
        self.callback = callback
        self.log: AttemptLog | None = None
        self.task: asyncio.Task[None] | None = None
        self.started_at: datetime | None = None
        self.pid: int | None = None
        self.pgid: int | None = None
        self.process_start_time: float | None = None
        self._seq = 0
        loop = asyncio.get_running_loop()
        self.first_delivered: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[AttemptReport] = loop.create_future()

    @property
    def attempt_id(self) -> str:
        return self.spec.attempt_id

    @property
    def ended(self) -> bool:
        """True once the terminal report has been delivered."""
        return self.done.done()

    def handle(self) -> AttemptHandle:
        return AttemptHandle(
            attempt_id=self.spec.attempt_id,
            session=self.spec.session,
            log_path=self.spec.log_path,
            pid=self.pid,
            pgid=self.pgid,
            process_start_time=self.process_start_time,
        )

    async def report(
        self,
        phase: Phase,
        reason: str,
        message: str = "",
        *,
        exit_code: int | None = None,
        signal: int | None = None,
        signal_name: str | None = None,
    ) -> None:
        """Build the next report and deliver it; a terminal one also completes the attempt."""
        self._seq += 1
        now = utcnow()
        report = AttemptReport(
            attempt_id=self.spec.attempt_id,
            session=self.spec.session,
            seq=self._seq,
            phase=phase,
            reason=reason,
            message=message,
            pid=self.pid,
            process_start_time=self.process_start_time,
            started_at=self.started_at,
            finished_at=now if phase.terminal else None,
            reported_at=now,
            log_dropped_bytes=self.log.dropped if self.log is not None else 0,
            exit_code=exit_code,
            signal=signal,
            signal_name=signal_name,
        )
        try:
            result = self.callback(report)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception(
                "report callback failed for attempt %s (seq %d, %s); the report is not retried",
                report.attempt_id,
                report.seq,
                report.phase.value,
            )
        finally:
            if not self.first_delivered.done():
                self.first_delivered.set_result(None)
            if phase.terminal and not self.done.done():
                self.done.set_result(report)


_A = TypeVar("_A", bound=Attempt)


class AttemptTable(Generic[_A]):
    """Attempts by id; the running ones plus the last ``retain_finished`` finished ones."""

    def __init__(self, retain_finished: int) -> None:
        if retain_finished < 0:
            raise ValueError(f"retain_finished must be >= 0, got {retain_finished!r}")
        self._retain = retain_finished
        self._attempts: dict[str, _A] = {}
        self._finished: collections.deque[str] = collections.deque()

    def add(self, attempt: _A) -> None:
        if attempt.attempt_id in self._attempts:
            raise AttemptExistsError(attempt.attempt_id)
        self._attempts[attempt.attempt_id] = attempt

    def get(self, attempt_id: str) -> _A:
        try:
            return self._attempts[attempt_id]
        except KeyError:
            raise UnknownAttemptError(attempt_id) from None

    def __contains__(self, attempt_id: object) -> bool:
        return attempt_id in self._attempts

    def running(self) -> list[_A]:
        """Attempts whose terminal report has not been delivered yet."""
        return [a for a in self._attempts.values() if not a.ended]

    def retire(self, attempt: _A) -> None:
        """Note that ``attempt`` ended; forget the oldest finished ones beyond the bound."""
        self._finished.append(attempt.attempt_id)
        while len(self._finished) > self._retain:
            self._attempts.pop(self._finished.popleft(), None)

    async def wait(self, attempt_id: str) -> AttemptReport:
        # Shielded: a caller giving up on waiting must not cancel the shared future.
        return await asyncio.shield(self.get(attempt_id).done)

    def logs(self, attempt_id: str, *, follow: bool) -> AsyncIterator[bytes]:
        attempt = self.get(attempt_id)
        return _read_log(attempt, follow=follow)


async def _read_log(attempt: Attempt, *, follow: bool) -> AsyncIterator[bytes]:
    if follow:
        # The log is created by the attempt's driver task; start() has returned by the time a
        # caller can ask, but a caller racing start() must not miss the beginning.
        await asyncio.shield(attempt.first_delivered)
    log = attempt.log
    if log is None:
        return
    async for chunk in log.read(follow=follow):
        yield chunk

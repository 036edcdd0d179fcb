"""Bookkeeping shared by the built-in runtimes: report sequencing, the table, the contract.

:class:`Attempt` numbers and delivers one attempt's reports (always from the attempt's own
driver task, which is what makes delivery serial and ordered) and remembers the final one.
:class:`AttemptTable` finds attempts by id, keeps a bounded number of finished ones for
:meth:`~cronloop.runtimes.base.Runtime.wait` and ``logs``, and implements those two methods.
:class:`TrackedRuntime` implements the parts of the :class:`~cronloop.runtimes.base.Runtime`
contract that do not depend on how the work runs (one driver task per attempt), so the inline
and process runtimes keep only running, stopping and cleaning up their kind of work.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import inspect
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import ClassVar, Generic, TypeVar

from cronloop.api.phase import Phase
from cronloop.runtimes.base import (
    AttemptExistsError,
    ReportCallback,
    Runtime,
    RuntimeClosedError,
    UnknownAttemptError,
)
from cronloop.runtimes.logfile import AttemptLog, append_note
from cronloop.runtimes.report import AttemptHandle, AttemptReport, Reason
from cronloop.runtimes.spec import AttemptSpec, RecoveryRecord

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


def note_recovery(record: RecoveryRecord, note: str) -> None:
    """Append ``note`` to the record's log, if it has one; a failure is only logged. Blocks."""
    if record.log_path is None:
        return
    try:
        append_note(record.log_path, note)
    except OSError as exc:
        logger.warning("cannot append to log %s: %s", record.log_path, exc.strerror)


def lost_report(
    record: RecoveryRecord,
    reason: str,
    message: str,
    *,
    pid: int | None = None,
    process_start_time: float | None = None,
) -> AttemptReport:
    """The terminal ``Lost`` report that settles ``record`` (its ``seq`` follows the last one)."""
    now = utcnow()
    return AttemptReport(
        attempt_id=record.attempt_id,
        session=record.session,
        seq=record.last_seq + 1,
        phase=Phase.LOST,
        reason=reason,
        message=message,
        pid=pid,
        process_start_time=process_start_time,
        finished_at=now,
        reported_at=now,
    )


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


class TrackedRuntime(Runtime, Generic[_A]):
    """A runtime that drives each attempt with one task of its own in this process.

    Subclasses name themselves (:attr:`_kind`, :attr:`_label`) and the settings they run, make
    their attempt objects and implement :meth:`_run`, :meth:`_begin_stop` and :meth:`_cleanup`;
    they still implement :meth:`recover` and :meth:`aclose` (with :meth:`_stop_running`).
    """

    #: The class name used in errors ("InlineRuntime").
    _kind: ClassVar[str]
    #: The short name used in task names and logs ("inline").
    _label: ClassVar[str]
    #: The ``AttemptSpec.settings`` type this runtime runs.
    _settings_type: ClassVar[type]

    def __init__(self, *, shutdown_grace: float, retain_finished: int) -> None:
        self._shutdown_grace = shutdown_grace
        self._table: AttemptTable[_A] = AttemptTable(retain_finished)
        self._closed = False

    # -- the contract --------------------------------------------------------------------

    async def start(self, spec: AttemptSpec, report: ReportCallback) -> AttemptHandle:
        if self._closed:
            raise RuntimeClosedError(self._kind)
        if not isinstance(spec.settings, self._settings_type):
            raise ValueError(
                f"{self._kind} cannot run AttemptSpec.settings of type "
                f"{type(spec.settings).__name__} (attempt {spec.attempt_id!r})"
            )
        attempt = self._new_attempt(spec, report)
        self._table.add(attempt)
        attempt.task = asyncio.get_running_loop().create_task(
            self._drive(attempt), name=f"cronloop-{self._label}-{spec.attempt_id}"
        )
        await asyncio.shield(attempt.first_delivered)
        return attempt.handle()

    async def cancel(
        self, attempt_id: str, *, grace: float, reason: str = Reason.CANCELLED_BY_USER
    ) -> None:
        if not grace >= 0:
            raise ValueError(f"cancel grace must be >= 0 seconds, got {grace!r}")
        attempt = self._table.get(attempt_id)
        if self._starting(attempt):
            await asyncio.shield(attempt.first_delivered)
        self._begin_stop(attempt, Phase.CANCELLED, reason, grace)

    async def wait(self, attempt_id: str) -> AttemptReport:
        return await self._table.wait(attempt_id)

    def logs(self, attempt_id: str, *, follow: bool = False) -> AsyncIterator[bytes]:
        return self._table.logs(attempt_id, follow=follow)

    # -- helpers for recover() and aclose() ------------------------------------------------

    def _check_recoverable(self, record: RecoveryRecord) -> None:
        """Refuse a record of an attempt this runtime is running (it is not a lost one)."""
        if record.attempt_id in self._table:
            raise ValueError(
                f"RecoveryRecord {record.attempt_id!r} names an attempt this runtime is "
                f"running; only a previous process's attempts can be recovered"
            )

    async def _stop_running(self, bound: float) -> None:
        """Refuse new starts, cancel every running attempt and wait ``bound`` s for the ends."""
        self._closed = True
        running = self._table.running()
        for attempt in running:
            if self._starting(attempt):
                await asyncio.shield(attempt.first_delivered)
            self._begin_stop(
                attempt, Phase.CANCELLED, Reason.RUNTIME_SHUTDOWN, self._shutdown_grace
            )
        tasks = [a.task for a in running if a.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=bound)
            for task in pending:
                logger.error("attempt task %s did not end within %.1f s of aclose()", task, bound)
                task.cancel()

    # -- one attempt ---------------------------------------------------------------------

    async def _drive(self, attempt: _A) -> None:
        try:
            await self._run(attempt)
        except Exception as exc:
            # A bug here must not leave the attempt without its terminal report.
            logger.exception(
                "%s runtime failed while running attempt %s", self._label, attempt.attempt_id
            )
            self._on_internal_error(attempt)
            if not attempt.ended:
                await attempt.report(Phase.FAILED, "InternalError", f"{type(exc).__name__}: {exc}")
        finally:
            self._cleanup(attempt)
            self._table.retire(attempt)

    @abc.abstractmethod
    def _new_attempt(self, spec: AttemptSpec, callback: ReportCallback) -> _A:
        """A new attempt object for ``spec`` (on the event loop)."""

    @abc.abstractmethod
    async def _run(self, attempt: _A) -> None:
        """Run the attempt to its terminal report (its driver task's body)."""

    def _starting(self, attempt: _A) -> bool:
        """True while start() is still getting the work going: a stop must wait for it."""
        return not attempt.first_delivered.done()

    @abc.abstractmethod
    def _begin_stop(
        self, attempt: _A, phase: Phase, reason: str, grace: float, *, message: str = ""
    ) -> None:
        """Begin stopping the attempt's work (forced after ``grace`` s); idempotent."""

    def _on_internal_error(self, attempt: _A) -> None:
        """Called after :meth:`_run` raised, before the ``InternalError`` report."""

    @abc.abstractmethod
    def _cleanup(self, attempt: _A) -> None:
        """Release what the attempt holds once it ended (timers, descriptors, its log)."""

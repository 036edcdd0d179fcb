"""Bookkeeping shared by the built-in runtimes: report sequencing, the table, the contract.

:class:`Attempt` numbers and delivers one attempt's reports, one at a time and in order
(whichever task or callback posts them), and remembers the final one.
:class:`AttemptTable` finds attempts by id, keeps a bounded number of finished ones for
:meth:`~cronloop.runtimes.base.Runtime.wait` and ``logs``, and implements those two methods.
:class:`TrackedRuntime` implements the parts of the :class:`~cronloop.runtimes.base.Runtime`
contract that do not depend on how the work runs, so the inline and process runtimes keep
only running, stopping and cleaning up their kind of work.

Hand-written delivery rather than a queue and a consumer task per attempt: the inline runtime
starts thousands of no-op attempts at once, and a task (or even a future) per attempt and
report was most of what an attempt cost. A plain report callback is called directly; only an
async one gets a task.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import ClassVar, Generic, TypeVar

from cronloop.api.phase import TERMINAL_PHASES, Phase
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
    """One started attempt: its spec, log, report sequence and completion.

    Reports go out through :meth:`post`, from plain callbacks, without waiting. A report is
    handed to the callback at once when nothing of the attempt is being delivered; an async
    callback's awaitable, and any report that follows it while it runs, are awaited by a task
    that delivers them in order. So a plain callback costs no task and no loop hop, and delivery
    stays serial whatever the callback is.

    The futures that :meth:`~cronloop.runtimes.base.Runtime.start`, ``cancel``, ``wait`` and
    ``logs`` may wait on are created when someone asks for them: most attempts are never
    waited on.
    """

    # Class-level defaults: most attempts never set these, and a class attribute costs
    # nothing per instance until it is assigned.
    log: AttemptLog | None = None
    task: asyncio.Task[None] | None = None
    started_at: datetime | None = None
    pid: int | None = None
    pgid: int | None = None
    process_start_time: float | None = None
    #: The terminal report, once it has been delivered.
    final: AttemptReport | None = None
    #: True once the terminal report was built (it may still be on its way).
    terminal_sent = False
    #: Called with the attempt once its terminal report was delivered (before ``wait`` wakes).
    on_terminal: Callable[[Attempt], None] | None = None
    _first_done = False
    #: The futures of the callers waiting for the first and the terminal report, one each
    #: (see wait_first).
    _first_callers: list[asyncio.Future[None]] | None = None
    _done_callers: list[asyncio.Future[AttemptReport]] | None = None
    #: The task delivering an earlier report, while it does.
    _delivering: asyncio.Future[None] | None = None
    #: The callback returned an awaitable before: deliver from a task, in one step.
    _async_callback = False

    def __init__(self, spec: AttemptSpec, callback: ReportCallback) -> None:
        self.spec = spec
        self.callback = callback
        self._seq = 0

    @property
    def attempt_id(self) -> str:
        return self.spec.attempt_id

    @property
    def ended(self) -> bool:
        """True once the terminal report has been delivered."""
        return self.final is not None

    @property
    def first_done(self) -> bool:
        """True once the first report has been delivered."""
        return self._first_done

    def wait_first(self) -> asyncio.Future[None]:
        """A future of the caller's own, resolved once the first report has been delivered.

        Awaited as it is: cancelling the caller cancels only its own future, never the
        attempt or another caller's wait. A shared future would need a shield, and the
        shield's hand-off costs a turn of the event loop (about 15 us, for an attempt of
        ``/bin/true`` that takes about 800 us all told).
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._first_done:
            future.set_result(None)
        else:
            self._first_callers = _enlisted(self._first_callers, future)
        return future

    def wait_done(self) -> asyncio.Future[AttemptReport]:
        """Like :meth:`wait_first`, for the terminal report (the future's result)."""
        future: asyncio.Future[AttemptReport] = asyncio.get_running_loop().create_future()
        if self.final is not None:
            future.set_result(self.final)
        else:
            self._done_callers = _enlisted(self._done_callers, future)
        return future

    def readable_log(self) -> AttemptLog | None:
        """The log that :meth:`~cronloop.runtimes.base.Runtime.logs` reads (None: empty)."""
        return self.log

    def handle(self) -> AttemptHandle:
        return AttemptHandle._unchecked(
            attempt_id=self.spec.attempt_id,
            session=self.spec.session,
            log_path=self.spec.log_path,
            pid=self.pid,
            pgid=self.pgid,
            process_start_time=self.process_start_time,
        )

    def before_terminal(self) -> None:
        """Called just before the terminal report reaches the callback, in the same step (the
        inline runtime closes the log here, so it is complete when the callback runs)."""

    def post(
        self,
        phase: Phase,
        reason: str,
        message: str = "",
        *,
        exit_code: int | None = None,
        signal: int | None = None,
        signal_name: str | None = None,
        now: datetime | None = None,
    ) -> asyncio.Future[None] | None:
        """Build the next report and deliver it without waiting; return the task delivering
        it if it could not be delivered at once, else None.

        It is delivered at once (the callback is called right here) if no earlier report is
        still on its way and the callback has not shown itself to be async. Otherwise a task
        delivers it after the earlier ones; once the callback is known to be async, that task
        also calls it, so that it starts in the same step as :meth:`before_terminal` (the log
        is then complete when it runs). ``now`` is the
        report's time (default: the current time).
        """
        report, terminal = self._next(phase, reason, message, exit_code, signal, signal_name, now)
        previous = self._delivering
        pending: Awaitable[None] | None = None
        if previous is None and not self._async_callback:
            if terminal:
                self.before_terminal()
            pending = self._call(report)
            if pending is None:
                self._delivered(report, terminal)
                return None
        delivery = asyncio.get_running_loop().create_task(
            self._deliver_later(previous, pending, report, terminal)
        )
        self._delivering = delivery
        return delivery

    def _next(
        self,
        phase: Phase,
        reason: str,
        message: str,
        exit_code: int | None,
        signal: int | None,
        signal_name: str | None,
        now: datetime | None,
    ) -> tuple[AttemptReport, bool]:
        """The next report, and whether it is the terminal one."""
        self._seq += 1
        if now is None:
            now = datetime.now(UTC)
        terminal = phase in TERMINAL_PHASES
        if terminal:
            self.terminal_sent = True
        log = self.log
        spec = self.spec
        report = AttemptReport._unchecked(
            attempt_id=spec.attempt_id,
            session=spec.session,
            seq=self._seq,
            phase=phase,
            reason=reason,
            message=message,
            exit_code=exit_code,
            signal=signal,
            signal_name=signal_name,
            pid=self.pid,
            process_start_time=self.process_start_time,
            started_at=self.started_at,
            finished_at=now if terminal else None,
            reported_at=now,
            log_dropped_bytes=log.dropped if log is not None else 0,
        )
        return report, terminal

    def _call(self, report: AttemptReport) -> Awaitable[None] | None:
        """Hand ``report`` to the callback; return what it returned if that must be awaited."""
        try:
            result = self.callback(report)
        except Exception:
            _callback_failed(report)
            return None
        if result is None or not inspect.isawaitable(result):
            return None
        self._async_callback = True
        return result

    async def _deliver_later(
        self,
        previous: asyncio.Future[None] | None,
        pending: Awaitable[None] | None,
        report: AttemptReport,
        terminal: bool,
    ) -> None:
        try:
            if previous is not None:
                await asyncio.wait((previous,))  # never raises, whatever became of it
            if pending is None:
                if terminal:
                    try:
                        self.before_terminal()
                    except Exception:
                        logger.exception("cleanup of attempt %s failed", report.attempt_id)
                pending = self._call(report)
            if pending is not None:
                await pending
        except Exception:
            _callback_failed(report)
        finally:
            if self._delivering is asyncio.current_task():
                self._delivering = None
            self._delivered(report, terminal)

    def _delivered(self, report: AttemptReport, terminal: bool) -> None:
        if not self._first_done:
            self._first_done = True
            _resolve(self._first_callers, None)
            self._first_callers = None
        if terminal and self.final is None:
            self.final = report
            if self.on_terminal is not None:
                self.on_terminal(self)
            _resolve(self._done_callers, report)
            self._done_callers = None


_T = TypeVar("_T")


def _enlisted(
    waiting: list[asyncio.Future[_T]] | None, future: asyncio.Future[_T]
) -> list[asyncio.Future[_T]]:
    if waiting is None:
        return [future]
    waiting.append(future)
    return waiting


def _resolve(waiting: list[asyncio.Future[_T]] | None, value: _T) -> None:
    for future in waiting or ():
        if not future.done():  # its caller gave up (cancelled)
            future.set_result(value)


def _callback_failed(report: AttemptReport) -> None:
    logger.exception(
        "report callback failed for attempt %s (seq %d, %s); the report is not retried",
        report.attempt_id,
        report.seq,
        report.phase.value,
    )


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
        #: Finished attempts, oldest first; one replaced by its id's next incarnation is
        #: skipped when it comes up for eviction.
        self._finished: collections.deque[Attempt] = collections.deque()

    def add(self, attempt: _A) -> None:
        """Track ``attempt``; a finished attempt kept under the same id is replaced only by
        another session's (the id's next incarnation: a Job deleted and made again under its
        old name names its attempts as before), never by its own, and a running one never."""
        known = self._attempts.get(attempt.attempt_id)
        if known is not None and (not known.ended or known.spec.session == attempt.spec.session):
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

    def retire(self, attempt: Attempt) -> None:
        """Note that ``attempt`` ended; forget the oldest finished ones beyond the bound."""
        self._finished.append(attempt)
        while len(self._finished) > self._retain:
            oldest = self._finished.popleft()
            if self._attempts.get(oldest.attempt_id) is oldest:
                del self._attempts[oldest.attempt_id]

    async def wait(self, attempt_id: str) -> AttemptReport:
        attempt = self.get(attempt_id)
        if attempt.final is not None:
            return attempt.final
        # A future of its own: a caller giving up on waiting cancels only that.
        return await attempt.wait_done()

    def logs(self, attempt_id: str, *, follow: bool) -> AsyncIterator[bytes]:
        attempt = self.get(attempt_id)
        return _read_log(attempt, follow=follow)


async def _read_log(attempt: Attempt, *, follow: bool) -> AsyncIterator[bytes]:
    if follow and not attempt.first_done:
        # The log is set up while start() runs; start() has usually returned by the time a
        # caller can ask, but a caller racing start() must not miss the beginning.
        await attempt.wait_first()
    log = attempt.readable_log()
    if log is not None:
        async for chunk in log.read(follow=follow):
            yield chunk
    if follow and not attempt.ended:
        # The log closes just before the terminal report goes out; a follower ends once it
        # has been delivered, so whoever follows a log to its end can read how it ended.
        await attempt.wait_done()


class TrackedRuntime(Runtime, Generic[_A]):
    """A runtime that tracks its attempts in this process and delivers their reports.

    Subclasses name themselves (:attr:`_kind`, :attr:`_label`) and the settings they run, make
    their attempt objects and implement :meth:`_launch`, :meth:`_begin_stop` and
    :meth:`_cleanup`. Neither built-in runtime has a task per attempt: the work's own events
    (a process's exit, a function's return) post the reports. An attempt is retired
    (:attr:`Attempt.on_terminal`) when its terminal report is delivered. Subclasses also
    implement :meth:`recover` and :meth:`aclose` (with :meth:`_stop_running`).
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
        # Retired when its terminal report is delivered, before any wait() wakes: a caller
        # that saw an attempt end also sees the bound applied.
        attempt.on_terminal = self._table.retire
        self._table.add(attempt)
        self._launch(attempt)
        if not attempt.first_done:
            # A future of its own: cancelling the caller does not cancel the attempt's start.
            await attempt.wait_first()
        return attempt.handle()

    async def cancel(
        self, attempt_id: str, *, grace: float, reason: str = Reason.CANCELLED_BY_USER
    ) -> None:
        if not grace >= 0:
            raise ValueError(f"cancel grace must be >= 0 seconds, got {grace!r}")
        # Checked here, where the caller can hear about it: the terminal report carries it.
        if not isinstance(reason, str) or not reason:
            raise ValueError(f"cancel reason must be a non-empty CamelCase word, got {reason!r}")
        attempt = self._table.get(attempt_id)
        if self._starting(attempt):
            await attempt.wait_first()
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
                await attempt.wait_first()
            self._begin_stop(
                attempt, Phase.CANCELLED, Reason.RUNTIME_SHUTDOWN, self._shutdown_grace
            )
        # The end of an attempt is the delivery of its terminal report, whichever task (or
        # callback) delivers it.
        ends = {attempt.wait_done(): attempt for attempt in running if not attempt.ended}
        if ends:
            _, pending = await asyncio.wait(list(ends), timeout=bound)
            for end in pending:
                logger.error(
                    "attempt %s did not end within %.1f s of aclose()", ends[end].attempt_id, bound
                )
                self._abandon(ends[end])

    # -- one attempt ---------------------------------------------------------------------

    @abc.abstractmethod
    def _launch(self, attempt: _A) -> None:
        """Get a new attempt going and post its first report, or arrange for it to be posted;
        :meth:`start` then waits for its delivery, if that has not happened yet. The work's
        own end posts the terminal report."""

    @abc.abstractmethod
    def _new_attempt(self, spec: AttemptSpec, callback: ReportCallback) -> _A:
        """A new attempt object for ``spec`` (on the event loop)."""

    def _starting(self, attempt: _A) -> bool:
        """True while start() is still getting the work going: a stop must wait for it."""
        return not attempt.first_done

    @abc.abstractmethod
    def _begin_stop(
        self, attempt: _A, phase: Phase, reason: str, grace: float, *, message: str = ""
    ) -> None:
        """Begin stopping the attempt's work (forced after ``grace`` s); idempotent."""

    def _abandon(self, attempt: _A) -> None:
        """Give up on an attempt that did not end within :meth:`aclose`'s bound (default:
        cancel its task, if it has one)."""
        if attempt.task is not None:
            attempt.task.cancel()

    @abc.abstractmethod
    def _cleanup(self, attempt: _A) -> None:
        """Release what the attempt holds once it ended (timers, descriptors, its log)."""

"""The runtime contract: :class:`Runtime`, the one interface every runtime implements.

The controller hands an attempt to a runtime and hears back through a report callback; the
inline and process runtimes implement it here, and a remote-agent runtime will implement the
same methods over its connection. Each method's docstring states what an implementation
guarantees; the shared test-suite in ``tests/runtimes`` checks those guarantees.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from cronloop.runtimes.report import AttemptHandle, AttemptReport, Reason
from cronloop.runtimes.spec import AttemptSpec, RecoveryRecord

__all__ = [
    "AttemptExistsError",
    "ReportCallback",
    "Runtime",
    "RuntimeClosedError",
    "UnknownAttemptError",
]

ReportCallback = Callable[[AttemptReport], Awaitable[None] | None]
"""Receives an attempt's reports; may be a plain function or a coroutine function."""


class UnknownAttemptError(LookupError):
    """Raised by :meth:`Runtime.cancel`, :meth:`Runtime.wait` and :meth:`Runtime.logs` for an
    attempt id the runtime never started (or has already forgotten)."""

    def __init__(self, attempt_id: str) -> None:
        super().__init__(f"no attempt {attempt_id!r} in this runtime")
        self.attempt_id = attempt_id


class AttemptExistsError(ValueError):
    """Raised by :meth:`Runtime.start` when an attempt with the same id was already started."""

    def __init__(self, attempt_id: str) -> None:
        super().__init__(f"attempt {attempt_id!r} was already started by this runtime")
        self.attempt_id = attempt_id


class RuntimeClosedError(RuntimeError):
    """Raised by :meth:`Runtime.start` after :meth:`Runtime.aclose` was called."""

    def __init__(self, runtime: str) -> None:
        super().__init__(f"{runtime} is closed and starts no more attempts")


class Runtime(abc.ABC):
    """Where attempts run.

    Guarantees common to every implementation:

    - **Exactly one terminal report per started attempt.** Once :meth:`start` returns, the
      attempt will be reported ``Succeeded``, ``Failed``, ``TimedOut``, ``Cancelled`` or
      ``Lost`` exactly once, unless :meth:`aclose` gives up on a process that cannot be killed
      (then :meth:`recover` in the next process reports it).
    - **Ordered, serial delivery.** The reports of one attempt reach the callback in ``seq``
      order (1, 2, ...), and the callback is never called concurrently for one attempt: an
      async callback is awaited before the next report of that attempt is delivered. Reports
      of different attempts may interleave. A callback that raises is logged and ignored; it
      cannot change the attempt's outcome.
    - **Running comes first.** An attempt that actually started is reported ``Running``
      (``seq`` 1) before :meth:`start` returns; one that could not start (import error, missing
      executable, ...) gets only its terminal ``Failed`` report, also before :meth:`start`
      returns.
    - **Stopping wins.** Once a cancel or a timeout has begun to stop an attempt, its terminal
      phase is ``Cancelled`` or ``TimedOut`` (the first of the two to begin), whatever exit
      status the stopped work produced; the exit status is still recorded.
    - **The log is complete at the end.** When the terminal report is delivered, the attempt's
      log file is closed and holds everything that will ever be written to it.
    """

    @abc.abstractmethod
    async def start(self, spec: AttemptSpec, report: ReportCallback) -> AttemptHandle:
        """Start an attempt and return once it is started (or has failed to start).

        Makes sure the attempt's log can be written (the file itself may be created at the
        first byte of output; a log that cannot be written fails the attempt before its work
        starts), starts the work, and delivers the first report before returning (see the
        class docstring). Cancelling the caller of :meth:`start` after the
        work was started does not orphan it: the attempt runs on and is reported as usual.

        :raises AttemptExistsError: if ``spec.attempt_id`` is running here, or finished here
            in the same session (a double start); a finished attempt of another session
            is replaced (the id's next incarnation, e.g. a Job made again under its name).
        :raises RuntimeClosedError: after :meth:`aclose`.
        :raises ValueError: if ``spec.settings`` are for a different runtime.
        """

    @abc.abstractmethod
    async def cancel(
        self, attempt_id: str, *, grace: float, reason: str = Reason.CANCELLED_BY_USER
    ) -> None:
        """Begin stopping an attempt and return without waiting for it to end.

        The work is asked to stop, then forced after ``grace`` seconds; the terminal report
        (``Cancelled`` with ``reason``) follows through the callback. Idempotent: cancelling an
        attempt that is already stopping or has ended does nothing (a shorter ``grace`` may
        bring the forced stop forward). Use :meth:`wait` to wait for the end.

        :raises UnknownAttemptError: if the attempt is not known here.
        :raises ValueError: if ``grace`` is negative or ``reason`` is empty (a report's reason
            must be a CamelCase word).
        """

    @abc.abstractmethod
    async def wait(self, attempt_id: str) -> AttemptReport:
        """Wait until the attempt has ended and its terminal report was delivered; return it.

        :raises UnknownAttemptError: if the attempt is not known here.
        """

    @abc.abstractmethod
    def logs(self, attempt_id: str, *, follow: bool = False) -> AsyncIterator[bytes]:
        """The attempt's log as chunks of bytes, from the beginning.

        Without ``follow`` the iterator yields what the log holds now and ends. With ``follow``
        it keeps yielding as the log grows and ends once the attempt has ended, the whole log
        was yielded and the terminal report was delivered to the report callback.

        :raises UnknownAttemptError: (immediately) if the attempt is not known here.
        """

    @abc.abstractmethod
    async def recover(
        self, records: Sequence[RecoveryRecord], *, grace: float = 5.0
    ) -> list[AttemptReport]:
        """Settle attempts a previous controller process left ``Running``; never rerun them.

        Returns one terminal ``Lost`` report per record, in order, with ``seq`` equal to
        ``record.last_seq + 1`` (the caller applies them; they do not go through any callback).
        Work that is provably gone is ``ProcessGone``; work that still runs cannot be observed
        any more, so it is stopped (``grace`` seconds between the polite and the forced stop)
        and reported ``OrphanKilled``. An implementation must never stop work it cannot prove
        belongs to the record (a reused pid is not the attempt's process).
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop everything this runtime owns, within a bounded time, and refuse new starts.

        Running attempts are cancelled with reason ``RuntimeShutdown`` and their terminal
        reports are delivered before this returns. Idempotent.
        """

"""What a runtime says back: :class:`AttemptReport`, :class:`AttemptHandle` and :class:`Reason`.

A report is a self-contained, frozen snapshot (it can be serialised and sent over the wire by
the future agent runtime). The receiver orders reports of one attempt by ``(session, seq)``:
``seq`` strictly increases per attempt, so a stale or reordered report is recognisable and
dropped instead of moving a finished attempt back (the seed-000 bug).

The built-in runtimes build their reports and handles with the private ``_unchecked``
constructors: a frozen dataclass's ``__init__`` sets every field through
``object.__setattr__``, which with the checks made a report cost about 2 µs, four times what
filling its ``__dict__`` costs, and a runtime's own values are valid by construction (the one
value a caller supplies, a cancel's reason, is checked where it is given).
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cronloop.api.phase import Phase

__all__ = ["REPORTABLE_PHASES", "AttemptHandle", "AttemptReport", "Reason", "signal_name"]

REPORTABLE_PHASES = frozenset(
    {Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED, Phase.TIMED_OUT, Phase.CANCELLED, Phase.LOST}
)
"""The phases a runtime reports: ``Running`` and the terminal phases an attempt can reach."""


class Reason(enum.StrEnum):
    """Why an attempt is in its phase: a CamelCase word, like a Kubernetes condition reason.

    The field on :class:`AttemptReport` is a plain ``str`` so other runtimes may add reasons;
    these are the ones the built-in runtimes use.
    """

    STARTED = "Started"
    """Running: the callable was called or the process was spawned."""
    COMPLETED = "Completed"
    """Succeeded: returned normally or exited with code 0."""
    NON_ZERO_EXIT = "NonZeroExit"
    """Failed: the process (or ``sys.exit`` in an inline callable) exited with a non-zero code."""
    SIGNALED = "Signaled"
    """Failed: the process was killed by a signal nobody in cronloop sent."""
    EXCEPTION = "Exception"
    """Failed: the inline callable raised; the traceback is in the attempt log."""
    IMPORT_ERROR = "ImportError"
    """Failed: the inline callable could not be imported or is not callable."""
    INVALID_ARGUMENTS = "InvalidArguments"
    """Failed: the inline callable does not accept the step's ``kwargs``."""
    EXIT_STATUS_LOST = "ExitStatusLost"
    """Failed: something else in the process reaped the child, so its exit status is unknown."""
    SPAWN_FAILED = "SpawnFailed"
    """Failed: the process could not be started (executable or working directory missing...)."""
    LOG_UNAVAILABLE = "LogUnavailable"
    """Failed: the attempt's log file could not be created, so nothing was started."""
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    """TimedOut: the attempt's timeout fired and it was stopped."""
    CANCELLED_BY_USER = "CancelledByUser"
    """Cancelled: :meth:`Runtime.cancel` was called (the default reason)."""
    RUNTIME_SHUTDOWN = "RuntimeShutdown"
    """Cancelled: the runtime was closed while the attempt ran."""
    PROCESS_GONE = "ProcessGone"
    """Lost: after a controller restart the attempt's process no longer exists."""
    ORPHAN_KILLED = "OrphanKilled"
    """Lost: after a controller restart the attempt still ran, unobservable, and was killed."""
    ORPHAN_UNKILLABLE = "OrphanUnkillable"
    """Lost: an orphan survived SIGKILL within the recovery bound (e.g. stuck in the kernel)."""


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for 15; ``"SIG<n>"`` for numbers the platform does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


@dataclass(frozen=True, kw_only=True)
class AttemptReport:
    """One phase change of one attempt.

    ``exit_code`` is set when the process (or an inline ``sys.exit``) exited normally;
    ``signal``/``signal_name`` when it was killed by a signal. ``pid`` and
    ``process_start_time`` (seconds since the epoch, as :meth:`psutil.Process.create_time`
    reports it) identify the process for crash recovery. ``log_dropped_bytes`` counts output
    beyond the attempt's log limit. Timestamps are timezone-aware UTC.
    """

    attempt_id: str
    session: str
    seq: int
    phase: Phase
    reason: str
    message: str = ""
    exit_code: int | None = None
    signal: int | None = None
    signal_name: str | None = None
    pid: int | None = None
    process_start_time: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reported_at: datetime
    log_dropped_bytes: int = 0

    def __post_init__(self) -> None:
        if self.seq < 1:
            raise ValueError(f"AttemptReport.seq must be >= 1, got {self.seq!r}")
        if self.phase not in REPORTABLE_PHASES:
            raise ValueError(f"AttemptReport.phase {self.phase.value} is not reported by runtimes")
        if not self.reason:
            raise ValueError("AttemptReport.reason must be a non-empty CamelCase word")
        if self.reported_at.tzinfo is None:
            raise ValueError("AttemptReport.reported_at must be timezone-aware")

    @property
    def terminal(self) -> bool:
        """True for the final report of an attempt."""
        return self.phase.terminal

    @classmethod
    def _unchecked(
        cls,
        *,
        attempt_id: str,
        session: str,
        seq: int,
        phase: Phase,
        reason: str,
        message: str,
        exit_code: int | None,
        signal: int | None,
        signal_name: str | None,
        pid: int | None,
        process_start_time: float | None,
        started_at: datetime | None,
        finished_at: datetime | None,
        reported_at: datetime,
        log_dropped_bytes: int,
    ) -> AttemptReport:
        """A report from values that are valid by construction (the runtimes' own), built
        without the checks and without the frozen dataclass's per-field ``object.__setattr__``
        (together three quarters of a report's cost). Every field must be given."""
        report = object.__new__(cls)
        report.__dict__.update(
            attempt_id=attempt_id,
            session=session,
            seq=seq,
            phase=phase,
            reason=reason,
            message=message,
            exit_code=exit_code,
            signal=signal,
            signal_name=signal_name,
            pid=pid,
            process_start_time=process_start_time,
            started_at=started_at,
            finished_at=finished_at,
            reported_at=reported_at,
            log_dropped_bytes=log_dropped_bytes,
        )
        return report


@dataclass(frozen=True, kw_only=True)
class AttemptHandle:
    """What :meth:`Runtime.start` returns: enough to find the attempt again.

    ``pid``, ``pgid`` and ``process_start_time`` are None for attempts that have no process of
    their own (inline) or whose process could not be started.
    """

    attempt_id: str
    session: str
    log_path: Path
    pid: int | None = None
    pgid: int | None = None
    process_start_time: float | None = None

    @classmethod
    def _unchecked(
        cls,
        *,
        attempt_id: str,
        session: str,
        log_path: Path,
        pid: int | None,
        pgid: int | None,
        process_start_time: float | None,
    ) -> AttemptHandle:
        """A handle built without the frozen dataclass's per-field ``object.__setattr__``
        (the runtimes build one per attempt). Every field must be given."""
        handle = object.__new__(cls)
        handle.__dict__.update(
            attempt_id=attempt_id,
            session=session,
            log_path=log_path,
            pid=pid,
            pgid=pgid,
            process_start_time=process_start_time,
        )
        return handle

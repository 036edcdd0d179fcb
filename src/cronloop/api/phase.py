"""The run lifecycle shared by attempts, sub-jobs and jobs.

``Pending -> Preparing (A) -> Prepared (B) -> Running (C) -> Succeeded (D)``, or one of the
terminal ``Failed | Cancelled | TimedOut | Lost | Skipped``. A phase only moves forward: its rank
never decreases, and a terminal phase is final.
"""

from __future__ import annotations

import enum

__all__ = ["TERMINAL_PHASES", "Phase", "PhaseRegression", "advance", "can_advance"]


class Phase(enum.StrEnum):
    """Where an attempt, a sub-job or a job is in its lifecycle."""

    PENDING = "Pending"
    PREPARING = "Preparing"
    PREPARED = "Prepared"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    TIMED_OUT = "TimedOut"
    LOST = "Lost"
    SKIPPED = "Skipped"

    @property
    def rank(self) -> int:
        """Position in the lifecycle: every terminal phase shares the highest rank."""
        return _RANK[self]

    @property
    def terminal(self) -> bool:
        """True when nothing can follow this phase."""
        return self in TERMINAL_PHASES


TERMINAL_PHASES = frozenset(
    {
        Phase.SUCCEEDED,
        Phase.FAILED,
        Phase.CANCELLED,
        Phase.TIMED_OUT,
        Phase.LOST,
        Phase.SKIPPED,
    }
)

_RANK: dict[Phase, int] = {
    Phase.PENDING: 0,
    Phase.PREPARING: 1,
    Phase.PREPARED: 2,
    Phase.RUNNING: 3,
    **dict.fromkeys(TERMINAL_PHASES, 4),
}


class PhaseRegression(ValueError):
    """Raised when a phase change would move backwards or leave a terminal phase."""

    def __init__(self, current: Phase, proposed: Phase) -> None:
        super().__init__(f"phase cannot move from {current.value} to {proposed.value}")
        self.current = current
        self.proposed = proposed


def can_advance(current: Phase, proposed: Phase) -> bool:
    """Whether ``proposed`` may follow ``current`` (equal phases are an idempotent no-op)."""
    if current == proposed:
        return True
    if current.terminal:
        return False
    return proposed.rank > current.rank


def advance(current: Phase, proposed: Phase) -> Phase:
    """Return ``proposed`` if it may follow ``current``; raise :class:`PhaseRegression` if not."""
    if not can_advance(current, proposed):
        raise PhaseRegression(current, proposed)
    return proposed

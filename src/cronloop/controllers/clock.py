"""Where controllers read the time.

Controllers need wall-clock instants (cron schedules are wall-clock) and delays on the event
loop's clock (timers, requeues). :class:`SystemClock` reads the system clock; :class:`LoopClock`
derives wall time from the loop's clock so that a fake loop clock (``looptime`` in tests) moves
both together and a whole day of schedules runs in milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "LoopClock", "SystemClock"]


class Clock(Protocol):
    """A source of the current instant."""

    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...


class SystemClock:
    """The system's wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class LoopClock:
    """Wall time advancing with the running loop's clock from a fixed start instant."""

    def __init__(
        self, start: datetime | None = None, *, loop: asyncio.AbstractEventLoop | None = None
    ):
        self._loop = loop or asyncio.get_running_loop()
        self._start = start or datetime.now(UTC)
        if self._start.tzinfo is None:
            raise ValueError("LoopClock start must be timezone-aware")
        self._origin = self._loop.time()

    def now(self) -> datetime:
        return datetime.fromtimestamp(
            self._start.timestamp() + (self._loop.time() - self._origin), UTC
        )


def monotonic() -> float:
    """Seconds on a monotonic clock (for admission sampling and durations)."""
    return time.monotonic()

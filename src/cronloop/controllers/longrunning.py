"""Long-running run detection: warn, once, when a run exceeds its expected duration.

A run is *long-running* when it has been running longer than its threshold: the CronJob's
``expectedDurationSeconds`` when set, otherwise ``multiple x median`` of that CronJob's recent
successful durations (:class:`DurationHistory`), raised to a floor. The run keeps running; the
controller only raises a warning event, exactly once per run.

:class:`LongRunningDetector` is pure bookkeeping with the clock passed in: ``started`` /
``finished`` track runs, :meth:`~LongRunningDetector.check` returns the runs that crossed their
threshold by ``now``, and :meth:`~LongRunningDetector.next_deadline` tells the owning loop when
to arm its (single) timer. Deadlines sit in a heap with lazy deletion, so with thousands of
runs in flight a check costs O(log n) per crossing rather than a scan of every run.

Hand-written because no library tracks per-run deadlines with warn-once semantics; the heap
and the median come from the standard library (``heapq``, ``statistics``).
"""

from __future__ import annotations

import heapq
import itertools
import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DurationHistory",
    "LongRunningDetector",
    "LongRunningStatistics",
    "LongRunningWarning",
    "Threshold",
]


@dataclass(frozen=True, slots=True)
class Threshold:
    """How long a run may take before it is long-running, and where that number came from.

    ``basis`` reads like ``expectedDurationSeconds`` or ``3 x median of last 20 runs``.
    """

    seconds: float
    basis: str


class DurationHistory:
    """The durations of one CronJob's most recent successful runs (at most ``size``).

    The history threshold uses the **median**, not p90: a p90 of 20 runs is set by the two
    slowest, so two slow outliers would loosen the threshold for everyone, while the median
    moves only when half the recent runs got slower, which is a new normal, not an anomaly.
    """

    def __init__(self, durations: Iterable[float] = (), *, size: int = 20) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self._window: deque[float] = deque(maxlen=size)
        for duration in durations:
            self.record(duration)

    @property
    def size(self) -> int:
        """The most durations kept."""
        maxlen = self._window.maxlen
        assert maxlen is not None
        return maxlen

    def __len__(self) -> int:
        return len(self._window)

    def durations(self) -> tuple[float, ...]:
        """The kept durations, oldest first."""
        return tuple(self._window)

    def record(self, duration: float) -> None:
        """Add the duration (seconds) of a successful run, evicting the oldest when full."""
        _check_seconds("duration", duration, allow_zero=True)
        self._window.append(float(duration))

    def threshold(
        self,
        expected: float | None,
        *,
        multiple: float = 3.0,
        min_samples: int = 5,
        floor: float = 10.0,
    ) -> Threshold | None:
        """The long-running threshold, or ``None`` when there is nothing to go by.

        ``expected`` (``expectedDurationSeconds``) wins when set, exactly as given. Otherwise,
        once at least ``min_samples`` durations are kept, it is ``multiple x median``, never
        below ``floor`` seconds (so jobs that take milliseconds do not warn on every hiccup).
        """
        if expected is not None:
            _check_seconds("expected", expected, allow_zero=False)
            return Threshold(float(expected), "expectedDurationSeconds")
        _check_seconds("multiple", multiple, allow_zero=False)
        _check_seconds("floor", floor, allow_zero=True)
        if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
            raise ValueError(f"min_samples must be a positive integer, got {min_samples!r}")
        if len(self._window) < min_samples:
            return None
        derived = multiple * statistics.median(self._window)
        basis = f"{multiple:g} x median of last {len(self._window)} runs"
        if derived < floor:
            return Threshold(floor, f"{basis}, raised to the {_fmt_seconds(floor)} floor")
        return Threshold(derived, basis)


@dataclass(frozen=True, slots=True)
class LongRunningWarning:
    """A run crossed its threshold at ``at`` while still running (it is not stopped)."""

    run_id: str
    cronjob: str
    started_at: float
    at: float
    threshold: Threshold

    @property
    def elapsed(self) -> float:
        """Seconds the run had been running when the warning was raised."""
        return self.at - self.started_at

    @property
    def message(self) -> str:
        """The warning event's text."""
        elapsed, limit = _fmt_over(self.elapsed, self.threshold.seconds)
        return (
            f'run "{self.run_id}" has been running {elapsed}, expected at most {limit} '
            f"({self.threshold.basis})"
        )


@dataclass(frozen=True, slots=True)
class LongRunningStatistics:
    """Runs tracked now, how many of them have a threshold, and warnings raised so far."""

    tracked: int
    watched: int
    warned: int


@dataclass(slots=True)
class _Run:
    cronjob: str
    started_at: float
    threshold: Threshold | None


class LongRunningDetector:
    """Tracks running runs and reports each one, once, when it crosses its threshold.

    The threshold of a run is fixed when it starts (``expected`` if given, else the history
    rule of :meth:`DurationHistory.threshold` with this detector's ``multiple``,
    ``min_samples`` and ``floor``). A run crosses it at ``started_at + threshold.seconds``;
    :meth:`check` reports it at any ``now`` at or after that instant, and never again.

    All times are one monotonic clock, passed in. "Once" holds for this detector's lifetime:
    after a restart, pass ``warned=True`` to :meth:`started` for runs whose warning was already
    recorded. Not thread-safe: owned by one loop.
    """

    def __init__(
        self,
        *,
        history_size: int = 20,
        multiple: float = 3.0,
        min_samples: int = 5,
        floor: float = 10.0,
    ) -> None:
        # Validate every option once here, not on the first run that needs the history rule.
        DurationHistory(size=history_size).threshold(
            None, multiple=multiple, min_samples=min_samples, floor=floor
        )
        self._history_size = history_size
        self._multiple = multiple
        self._min_samples = min_samples
        self._floor = floor
        self._histories: dict[str, DurationHistory] = {}
        self._runs: dict[str, _Run] = {}
        # (deadline, tie-breaker, run id, the _Run it was pushed for). A run has at most one
        # entry, popped when it is warned; an entry whose _Run is no longer the tracked one
        # (finished, or its id reused) is stale and dropped when reached or compacted.
        self._heap: list[tuple[float, int, str, _Run]] = []
        self._seq = itertools.count()
        self._watched = 0
        self._warned_total = 0

    def history(self, cronjob: str) -> DurationHistory:
        """The duration history of ``cronjob`` (created empty); seed it from stored runs."""
        history = self._histories.get(cronjob)
        if history is None:
            history = self._histories[cronjob] = DurationHistory(size=self._history_size)
        return history

    def forget_cronjob(self, cronjob: str) -> None:
        """Drop the history of a deleted CronJob; its tracked runs stay tracked."""
        self._histories.pop(cronjob, None)

    def started(
        self,
        run_id: str,
        *,
        cronjob: str,
        started_at: float,
        expected: float | None = None,
        warned: bool = False,
    ) -> Threshold | None:
        """Track a running run and return its threshold (``None``: nothing to compare with).

        Idempotent for level-triggered callers: a run already tracked keeps its first
        registration and its threshold is returned unchanged.
        """
        if not math.isfinite(started_at):
            raise ValueError(f"started_at must be a finite time, got {started_at!r}")
        current = self._runs.get(run_id)
        if current is not None:
            return current.threshold
        history = self._histories.get(cronjob) or DurationHistory(size=self._history_size)
        threshold = history.threshold(
            expected, multiple=self._multiple, min_samples=self._min_samples, floor=self._floor
        )
        run = _Run(cronjob=cronjob, started_at=started_at, threshold=threshold)
        self._runs[run_id] = run
        if threshold is not None:
            self._watched += 1
            if not warned:
                deadline = started_at + threshold.seconds
                heapq.heappush(self._heap, (deadline, next(self._seq), run_id, run))
        return threshold

    def finished(self, run_id: str, duration: float, *, success: bool) -> bool:
        """Stop tracking ``run_id``; a successful run's ``duration`` joins its history.

        Returns False (and records nothing) when the run is not tracked, so repeated calls
        from a level-triggered reconcile are harmless.
        """
        _check_seconds("duration", duration, allow_zero=True)
        run = self._runs.pop(run_id, None)
        if run is None:
            return False
        if run.threshold is not None:
            self._watched -= 1
        if success:
            self.history(run.cronjob).record(duration)
        self._compact()
        return True

    def check(self, now: float) -> list[LongRunningWarning]:
        """The runs that have crossed their threshold by ``now`` and were not warned yet.

        A run is returned at most once, however often it is checked. Ordered by deadline.
        """
        warnings: list[LongRunningWarning] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, run_id, run = heapq.heappop(heap)
            if self._runs.get(run_id) is not run:
                continue
            assert run.threshold is not None  # only runs with a threshold are pushed
            self._warned_total += 1
            warnings.append(
                LongRunningWarning(
                    run_id=run_id,
                    cronjob=run.cronjob,
                    started_at=run.started_at,
                    at=now,
                    threshold=run.threshold,
                )
            )
        return warnings

    def next_deadline(self) -> float | None:
        """When the next tracked, not yet warned run crosses its threshold; ``None`` if none.

        Arm the loop's timer for this instant and call :meth:`check` when it fires.
        """
        heap = self._heap
        while heap:
            _, _, run_id, run = heap[0]
            if self._runs.get(run_id) is run:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def statistics(self) -> LongRunningStatistics:
        """Runs tracked, runs with a threshold, and warnings raised since construction."""
        return LongRunningStatistics(
            tracked=len(self._runs), watched=self._watched, warned=self._warned_total
        )

    def _compact(self) -> None:
        # Finished runs leave stale heap entries; rebuild once they outnumber the live ones so
        # the heap stays proportional to the runs in flight.
        if len(self._heap) > 2 * self._watched + 64:
            self._heap = [entry for entry in self._heap if self._runs.get(entry[2]) is entry[3]]
            heapq.heapify(self._heap)


def _check_seconds(name: str, value: float, *, allow_zero: bool) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:.0f}s"
    if seconds >= 1:
        return f"{round(seconds, 1):g}s"
    return f"{seconds:.2g}s"


def _fmt_over(elapsed: float, limit: float) -> tuple[str, str]:
    """``elapsed`` and ``limit`` (seconds) as text, the elapsed time reading larger.

    A warning is raised just after the limit, so at the usual precision a run 2.04 s into a 2 s
    limit read "running 2s, expected at most 2s". Both are shown to the same number of
    decimals, one more at a time (to the millisecond) until the elapsed time reads larger;
    the limit keeps its own decimals (2.5 s is never shown as 3 s).
    """
    start = 0 if elapsed >= 100 else 1 if elapsed >= 1 else 2
    own = 0 if limit >= 100 else 1 if limit >= 1 else 3
    for digits in range(start, 4):
        shown = round(elapsed, digits)
        bound = round(limit, max(digits, own))
        if shown > bound:
            return _fixed(shown, digits), _fixed(bound, max(digits, own))
    # Less than half a millisecond over (or exactly at) the limit.
    over = math.ceil(elapsed * 1000) / 1000
    return _fixed(over, 3), _fixed(round(limit, 3), 3)


def _fixed(seconds: float, digits: int) -> str:
    text = f"{seconds:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}s"

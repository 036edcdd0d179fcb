"""Vocabulary of the trigger punctuality benchmark: scenarios, start logs and lateness statistics.

Every subject of the trigger benchmark (the bare ``loop.call_at`` floor, APScheduler, cronloop)
is driven by the same :class:`Scenario`, records the wall-clock start of each run in the same
kind of :class:`StartLog`, and is summarised by the same :class:`LatencyStats`, so the rows of
the table differ only in the scheduler under test.

Lateness is ``started_at - scheduled_at`` in seconds of ``time.time()`` (both ends on the wall
clock, because APScheduler takes and compares aware datetimes), reported in milliseconds.
Percentiles are exact: linear interpolation between the two closest ranks, the ``inclusive``
method of :func:`statistics.quantiles` (numpy's default ``linear``), so p50 is the median and
p99 of 10,000 values is ``v[9899] + 0.01 * (v[9900] - v[9899])`` of the sorted values.

Hand-written because the parts are tiny and specific to this benchmark. :func:`percentile` is
the five-line formula rather than a call to :func:`statistics.quantiles` because the latter
needs two data points on Python 3.11 and computes all 99 cut points to return one (the tests
check that the two agree); medians come from :mod:`statistics`. The rest is bookkeeping: which
start belongs to which scheduled instant, double starts, aggregation of repeats.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from bench.harness import Comparison, Measurement

__all__ = [
    "BURST_RUNS_PER_S_TARGET",
    "SPREAD_P99_MS_TARGET",
    "LatencyStats",
    "Measure",
    "Metric",
    "Scenario",
    "StartLog",
    "as_measurement",
    "comparisons",
    "median_stats",
    "percentile",
    "standard_scenarios",
]

SPREAD_P99_MS_TARGET = 50.0
"""The issue's target for cronloop: p99 lateness under 50 ms on the spread load."""

BURST_RUNS_PER_S_TARGET = 5_000.0
"""The issue's target for cronloop: at least 5,000 durable runs/s on the burst."""

Metric = Literal["p50_ms", "p99_ms", "max_ms", "runs_per_s", "setup_s"]
"""A per-run statistic of :class:`LatencyStats` that can become a harness sample."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 <= q <= 100) of ``values``, interpolating linearly.

    Equals ``statistics.quantiles(values, n=100, method="inclusive")[q - 1]`` for integer
    ``q`` in 1..99; ``q = 0`` is the minimum and ``q = 100`` the maximum.

    :raises ValueError: if ``values`` is empty or ``q`` is outside [0, 100].
    """
    if not values:
        raise ValueError("values: empty, a percentile needs at least one value")
    if not 0 <= q <= 100:
        raise ValueError(f"q: must be between 0 and 100, got {q!r}")
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * fraction)


@dataclass(frozen=True)
class LatencyStats:
    """Punctuality and throughput of one measured run of a scenario.

    ``count`` runs started (``missed`` were due but never started: dropped as misfires or not
    started before the measurement's deadline). Lateness percentiles are in milliseconds;
    ``runs_per_s`` is ``count / (last start - first scheduled instant)``; ``setup_s`` is the
    wall time spent preparing the runs before the first instant (adding jobs to a store), which
    is reported but never part of lateness.
    """

    count: int
    missed: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    runs_per_s: float
    setup_s: float

    @classmethod
    def from_pairs(
        cls,
        pairs: Iterable[tuple[float, float]],
        *,
        missed: int = 0,
        setup_s: float = 0.0,
    ) -> LatencyStats:
        """Summarise ``(scheduled_at, started_at)`` pairs, both in seconds on the same clock.

        :raises ValueError: if there are no pairs, a time is not finite, ``missed`` or
            ``setup_s`` is negative, or the last start is not after the first scheduled instant
            (no span to compute a rate over).
        """
        if missed < 0:
            raise ValueError(f"missed: must be >= 0, got {missed!r}")
        if not (math.isfinite(setup_s) and setup_s >= 0):
            raise ValueError(f"setup_s: must be a finite number >= 0, got {setup_s!r}")
        scheduled: list[float] = []
        lateness_ms: list[float] = []
        last_start = -math.inf
        for index, (scheduled_at, started_at) in enumerate(pairs):
            if not (math.isfinite(scheduled_at) and math.isfinite(started_at)):
                raise ValueError(
                    f"pairs[{index}]: times must be finite, got ({scheduled_at!r}, {started_at!r})"
                )
            scheduled.append(scheduled_at)
            lateness_ms.append((started_at - scheduled_at) * 1000.0)
            last_start = max(last_start, started_at)
        if not lateness_ms:
            raise ValueError("pairs: empty, no run started so there is no lateness to report")
        span = last_start - min(scheduled)
        if span <= 0:
            raise ValueError(
                f"pairs: the last start is {span * 1000:.3f} ms after the first scheduled "
                "instant, so there is no positive span to compute runs/s over"
            )
        return cls(
            count=len(lateness_ms),
            missed=missed,
            p50_ms=percentile(lateness_ms, 50),
            p99_ms=percentile(lateness_ms, 99),
            max_ms=max(lateness_ms),
            runs_per_s=len(lateness_ms) / span,
            setup_s=setup_s,
        )


def median_stats(runs: Sequence[LatencyStats]) -> LatencyStats:
    """Aggregate repeated runs: the median of each timing and rate, the worst of the counts.

    ``count`` is the smallest and ``missed`` the largest over the repeats, so a run dropped in
    one repeat is never hidden by a median of the others.

    :raises ValueError: if ``runs`` is empty.
    """
    if not runs:
        raise ValueError("runs: empty, there is nothing to aggregate")
    return LatencyStats(
        count=min(r.count for r in runs),
        missed=max(r.missed for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        max_ms=statistics.median(r.max_ms for r in runs),
        runs_per_s=statistics.median(r.runs_per_s for r in runs),
        setup_s=statistics.median(r.setup_s for r in runs),
    )


def as_measurement(subject: str, runs: Sequence[LatencyStats], metric: Metric) -> Measurement:
    """One statistic of repeated runs as a harness :class:`~bench.harness.Measurement`.

    :raises ValueError: if ``runs`` is empty.
    """
    if not runs:
        raise ValueError("runs: empty, a measurement needs at least one sample")
    return Measurement(subject, tuple(float(getattr(r, metric)) for r in runs))


@dataclass(frozen=True)
class Scenario:
    """``n`` runs that fall due at ``t0`` (burst), or over ``spread_s`` seconds from it.

    ``t0`` is chosen by each measurement as "now + setup + ``lead_s``": ``lead_s`` is the quiet
    time a subject gets between finishing its setup and the first instant. Spread instants are
    ``t0 + spread_s * i / n`` for ``i`` in ``0..n-1`` (deterministic, one every
    ``spread_s / n`` seconds, the last one ``spread_s / n`` before ``t0 + spread_s``).
    ``per_second`` is the spread at cron's one-second resolution: ``spread_s`` is a whole
    number of seconds and run ``i`` is due at ``t0 + floor(i * spread_s / n)``, so an equal
    share of the runs falls due at each of ``spread_s`` consecutive whole-second offsets.
    """

    kind: Literal["burst", "spread", "per_second"]
    n: int
    spread_s: float = 0.0
    lead_s: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in ("burst", "spread", "per_second"):
            raise ValueError(f"kind: must be 'burst', 'spread' or 'per_second', got {self.kind!r}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n: must be an integer >= 1, got {self.n!r}")
        if not (math.isfinite(self.lead_s) and self.lead_s >= 0):
            raise ValueError(f"lead_s: must be a finite number >= 0, got {self.lead_s!r}")
        if self.kind == "burst" and self.spread_s != 0:
            raise ValueError(f"spread_s: must be 0 for a burst, got {self.spread_s!r}")
        if self.kind == "spread" and not (math.isfinite(self.spread_s) and self.spread_s > 0):
            raise ValueError(
                f"spread_s: must be a finite number > 0 for a spread, got {self.spread_s!r}"
            )
        whole = math.isfinite(self.spread_s) and self.spread_s == int(self.spread_s)
        if self.kind == "per_second" and not (whole and self.spread_s >= 1):
            raise ValueError(
                f"spread_s: must be a whole number of seconds >= 1 for per_second, "
                f"got {self.spread_s!r}"
            )

    @classmethod
    def burst(cls, n: int, *, lead_s: float = 0.5) -> Scenario:
        """``n`` runs all due at the same instant."""
        return cls("burst", n, 0.0, lead_s)

    @classmethod
    def spread(cls, n: int, over_s: float, *, lead_s: float = 0.5) -> Scenario:
        """``n`` runs due one every ``over_s / n`` seconds."""
        return cls("spread", n, over_s, lead_s)

    @classmethod
    def per_second(cls, n: int, seconds: int, *, lead_s: float = 0.5) -> Scenario:
        """``n`` runs shared equally among ``seconds`` consecutive whole-second instants."""
        return cls("per_second", n, float(seconds), lead_s)

    @property
    def name(self) -> str:
        """A short label for tables, e.g. ``burst 10,000`` or ``spread 10,000 / 5 s``."""
        if self.kind == "burst":
            return f"burst {self.n:,}"
        if self.kind == "per_second":
            return f"per-second {self.n:,} / {self.spread_s:g} s"
        return f"spread {self.n:,} / {self.spread_s:g} s"

    def instants(self, t0: float) -> list[float]:
        """The scheduled instant of each run, in run order, for a first instant ``t0``."""
        if self.kind == "burst":
            return [t0] * self.n
        if self.kind == "per_second":
            seconds = int(self.spread_s)
            return [t0 + (i * seconds) // self.n for i in range(self.n)]
        step = self.spread_s / self.n
        return [t0 + step * i for i in range(self.n)]


def standard_scenarios(quick: bool) -> list[Scenario]:
    """The issue's two loads: 10,000 runs in one instant and 10,000 over 5 s.

    ``quick`` shrinks them to 1,000 runs and 1 s (the same rate per second for the spread is
    not kept: quick mode is a smoke run, not a measurement).
    """
    if quick:
        return [Scenario.burst(1_000), Scenario.spread(1_000, 1.0)]
    return [Scenario.burst(10_000), Scenario.spread(10_000, 5.0)]


class StartLog:
    """Thread-safe record of when each of ``n`` runs started, by run index.

    A subject's job calls :meth:`record` with its run index as its first action; the reader
    waits with :meth:`wait_all` and pairs the starts with their scheduled instants. Starting the
    same index twice is a double fire, which :meth:`pairs` refuses to hide.
    """

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: must be an integer >= 1, got {n!r}")
        self._n = n
        self._starts: list[tuple[int, float]] = []
        self._lock = threading.Lock()
        self._all_started = threading.Event()
        self._on_all_started: list[Callable[[], object]] = []

    def record(self, index: int) -> None:
        """Note that run ``index`` started now (``time.time()``); safe from any thread."""
        started_at = time.time()
        with self._lock:
            self._starts.append((index, started_at))
            if len(self._starts) != self._n:
                return
            self._all_started.set()
            callbacks, self._on_all_started = self._on_all_started, []
        for callback in callbacks:
            callback()

    @property
    def started(self) -> int:
        """How many starts were recorded so far."""
        with self._lock:
            return len(self._starts)

    def wait_all(self, timeout: float) -> bool:
        """Block until ``n`` starts were recorded or ``timeout`` seconds passed; True if all."""
        return self._all_started.wait(max(0.0, timeout))

    async def wait_all_async(self) -> None:
        """Wait on the running event loop until ``n`` starts were recorded.

        Wakes the loop once, when the last start is recorded (from any thread), instead of
        polling: a subject whose runs start on this loop must not be disturbed by the wait.
        Bound it with ``asyncio.timeout``.
        """
        loop = asyncio.get_running_loop()
        all_started = asyncio.Event()

        def notify() -> None:
            loop.call_soon_threadsafe(all_started.set)

        with self._lock:
            if self._all_started.is_set():
                return
            self._on_all_started.append(notify)
        await all_started.wait()

    def pairs(self, instants: Sequence[float]) -> list[tuple[float, float]]:
        """``(scheduled_at, started_at)`` for each recorded start, ``instants`` by run index.

        :raises ValueError: if ``instants`` does not have ``n`` entries, a recorded index is out
            of range, or a run started more than once.
        """
        if len(instants) != self._n:
            raise ValueError(f"instants: expected {self._n} entries, got {len(instants)}")
        with self._lock:
            starts = list(self._starts)
        seen: set[int] = set()
        result: list[tuple[float, float]] = []
        for index, started_at in starts:
            if not 0 <= index < self._n:
                raise ValueError(f"index: run {index} is outside 0..{self._n - 1}")
            if index in seen:
                raise ValueError(f"index: run {index} started more than once (double fire)")
            seen.add(index)
            result.append((instants[index], started_at))
        return result


class Measure(Protocol):
    """A subject's measurement: one run of ``scenario``, files (if any) under ``tmp_dir``.

    Synchronous; it owns whatever loop, threads or processes it needs and stops them before it
    returns. ``tmp_dir`` is a fresh empty directory for this call.
    """

    def __call__(self, scenario: Scenario, /, *, tmp_dir: Path) -> LatencyStats: ...


_ROWS: tuple[tuple[Metric, str, str, bool], ...] = (
    ("p50_ms", "p50 lateness", "ms", False),
    ("p99_ms", "p99 lateness", "ms", False),
    ("max_ms", "max lateness", "ms", False),
    ("runs_per_s", "throughput", "runs/s", True),
)


def comparisons(
    scenario: Scenario,
    results: dict[str, list[LatencyStats]],
    *,
    subject: str = "cronloop",
    baseline: str = "apscheduler",
    floors: Sequence[str] = ("call_at", "call_at_uvloop"),
) -> list[Comparison]:
    """Harness rows for one scenario: ``subject`` against ``baseline``, ``floors`` as context.

    One row per statistic (p50, p99 and max lateness, runs/s), each carrying the samples of
    every repeat; the issue's targets are attached (absolute) to the even spread's p99 and the
    burst's runs/s (a ``per_second`` load, the spread at cron's resolution, has none: it is
    five bursts, harder than the load the target is for). ``results`` maps a
    subject name to its repeated runs, as ``measure_subjects`` in bench/trigger_baselines.py
    returns them.

    :raises ValueError: if ``subject`` or ``baseline`` has no runs in ``results``.
    """
    for name in (subject, baseline):
        if not results.get(name):
            raise ValueError(f"results: no runs for {name!r} (have {sorted(results)})")
    mine, theirs = median_stats(results[subject]), median_stats(results[baseline])
    notes = (
        f"started {mine.count:,}/{scenario.n:,} (missed {mine.missed}); {baseline} started "
        f"{theirs.count:,} (missed {theirs.missed}); setup {mine.setup_s:.2f} s vs "
        f"{theirs.setup_s:.2f} s, never counted as lateness"
    )
    rows: list[Comparison] = []
    for metric, label, unit, higher_is_better in _ROWS:
        target: float | None = None
        if metric == "p99_ms" and scenario.kind == "spread":
            target = SPREAD_P99_MS_TARGET
        if metric == "runs_per_s" and scenario.kind == "burst":
            target = BURST_RUNS_PER_S_TARGET
        extra = {}
        for floor in floors:
            floor_runs = results.get(floor)
            if not floor_runs:
                continue
            value = float(getattr(median_stats(floor_runs), metric))
            extra[f"{floor} (floor)"] = (
                f"{value:,.0f} {unit}" if higher_is_better else (f"{value:,.2f} {unit}")
            )
        rows.append(
            Comparison(
                name=f"{scenario.name}: {label}",
                metric=label,
                unit=unit,
                cronloop=as_measurement(subject, results[subject], metric),
                baseline=as_measurement(baseline, results[baseline], metric),
                higher_is_better=higher_is_better,
                target=target,
                target_absolute=target is not None,
                notes=notes if metric == "runs_per_s" else "",
                extra=extra,
            )
        )
    return rows

"""Where a fired run's CPU goes: ``python -m bench.trigger_probe [burst|spread] [options]``.

A diagnostic for work on the fire path, not a suite (it writes no table). It runs the cronloop
subject of the trigger benchmark (:func:`bench.trigger.measure_cronloop`: the same store,
manager, runtime and loop as ``cronloop up``) and reports, per run, over the window from the
first scheduled instant to the last start: the event-loop thread's CPU, the writer process's
CPU (user + system), the wall time, and the cyclic collector's collections in the window;
with runs/s and p99 lateness as the benchmark computes them.

Machines differ a lot (the same commit measured 4,058 burst runs/s on one VM and about 2,300
on another), so compare two versions in one sitting, alternating:

    git worktree add /tmp/other <commit>
    cp bench/trigger_probe.py /tmp/other/bench/    # if that checkout predates the probe
    PYTHONPATH=/tmp/other/src:/tmp/other .venv/bin/python -m bench.trigger_probe burst
    .venv/bin/python -m bench.trigger_probe burst

The readings are taken by wrapping :meth:`StartLog.record` and :meth:`Scenario.instants`
(class attributes of the benchmark's own vocabulary), so that the probe also measures older
checkouts whose ``measure_cronloop`` has no hooks.

``--stages`` also splits each run's lateness in three, by wrapping two controller methods:
from its instant to the start of the CronJob pass that fired it (the timer, the work queue,
a busy loop), from there to the hand-over of its committed records to the Job controller
(``JobController.start_planned``: the pass, its batch, the writer round trip), and from there
to its start (the runtime). Each is printed as p50 / p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.lateness import Scenario, StartLog, percentile
from bench.trigger import measure_cronloop
from cronloop.controllers import CRONJOB_LABEL, CronJobController, JobController

__all__ = ["Reading", "main", "probe"]


@dataclass(frozen=True)
class Reading:
    """One measured run of a scenario, per fired run (microseconds) unless said."""

    runs_per_s: float
    p99_ms: float
    loop_cpu_us: float
    writer_cpu_us: float
    wall_us: float
    gc_collections: int
    gc_pause_ms: float
    #: p50 and p99 of each stage of the lateness, in milliseconds (``--stages``).
    stages: tuple[tuple[float, float], ...] = ()

    def line(self) -> str:
        if not self.stages:
            return self._line()
        split = "".join(
            f"  {name} {p50:.1f}/{p99:.1f}"
            for name, (p50, p99) in zip(_STAGES, self.stages, strict=True)
        )
        return f"{self._line()}\n        stages, ms p50/p99:{split}"

    def _line(self) -> str:
        return (
            f"runs/s {self.runs_per_s:7,.0f}  p99 {self.p99_ms:8.1f} ms  "
            f"loop {self.loop_cpu_us:5.0f} us  writer {self.writer_cpu_us:5.0f} us  "
            f"wall {self.wall_us:5.0f} us  loop busy {self.loop_cpu_us / self.wall_us:4.0%}  "
            f"gc {self.gc_collections} x, {self.gc_pause_ms:.0f} ms"
        )


class _Window:
    """CPU and collector readings at the first instant and at the last start."""

    def __init__(self) -> None:
        # The event loop runs on the thread that calls measure_cronloop: this one.
        self._clock = time.pthread_getcpuclockid(threading.get_ident())
        self.start: tuple[float, float, float] | None = None
        self.end: tuple[float, float, float] | None = None
        self.pauses: list[tuple[float, float]] = []
        self._gc_started = 0.0

    def read(self) -> tuple[float, float, float]:
        """(loop thread CPU s, writer processes' CPU s, perf_counter s)."""
        writer = 0.0
        for child in psutil.Process().children():
            with_times = child.cpu_times()
            writer += with_times.user + with_times.system
        return time.clock_gettime(self._clock), writer, time.perf_counter()

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        del info
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.pauses.append((self._gc_started, time.perf_counter() - self._gc_started))


_STAGES = ("due->pass", "pass->committed", "committed->started")


class _Stages:
    """Per run: when the last CronJob pass before its commit began, when its records were
    handed to the Job controller, and when it started (wall seconds)."""

    def __init__(self) -> None:
        self.passes: dict[str, list[float]] = {}
        self.committed: dict[str, float] = {}
        self.started: dict[int, float] = {}

    def install(self) -> Callable[[], None]:
        """Wrap the controllers' methods; returns what puts them back."""
        reconcile = CronJobController.reconcile_batch
        start_planned = JobController.start_planned
        passes, committed = self.passes, self.committed

        async def reconcile_batch(self: CronJobController, names: Any) -> Any:
            now = time.time()
            for name in names:
                passes.setdefault(name, []).append(now)
            return await reconcile(self, names)

        async def planned(self: JobController, runs: Any) -> Any:
            now = time.time()
            for _, run, _ in runs:
                committed.setdefault(run.labels.get(CRONJOB_LABEL), now)
            return await start_planned(self, runs)

        CronJobController.reconcile_batch = reconcile_batch  # type: ignore[method-assign]
        JobController.start_planned = planned  # type: ignore[method-assign]

        def undo() -> None:
            CronJobController.reconcile_batch = reconcile  # type: ignore[method-assign]
            JobController.start_planned = start_planned  # type: ignore[method-assign]

        return undo

    def split(self, due: list[float]) -> tuple[tuple[float, float], ...]:
        parts: tuple[list[float], ...] = ([], [], [])
        for index, instant in enumerate(due):
            name = f"run-{index}"  # bench.trigger names CronJob i so
            done = self.committed.get(name)
            started = self.started.get(index)
            if done is None or started is None:
                continue
            began = max((t for t in self.passes.get(name, ()) if t <= done), default=instant)
            values = (began - instant, done - began, started - done)
            for part, value in zip(parts, values, strict=True):
                part.append(value * 1e3)
        return tuple(
            (percentile(part, 50), percentile(part, 99)) if part else (0.0, 0.0) for part in parts
        )


def probe(scenario: Scenario, *, stages: bool = False) -> Reading:
    """Measure ``scenario`` once (see the module docstring)."""
    window = _Window()
    timeline = _Stages() if stages else None
    record = StartLog.record
    instants = Scenario.instants

    def recording(log: StartLog, index: int) -> None:
        if timeline is not None:
            timeline.started[index] = time.time()
        record(log, index)
        if log.started == scenario.n and window.end is None:
            window.end = window.read()

    due: list[float] = []

    def instants_with_timer(self: Scenario, t0: float) -> list[float]:
        due[:] = instants(self, t0)

        def at_first() -> None:
            window.start = window.read()

        # A thread, not the loop: the loop may be busy exactly when the instant comes.
        timer = threading.Timer(max(0.0, due[0] - time.time()), at_first)
        timer.daemon = True
        timer.start()
        return due

    results = Path(__file__).parent / ".results"
    results.mkdir(exist_ok=True)
    gc.callbacks.append(window.on_gc)
    StartLog.record = recording  # type: ignore[method-assign,assignment]
    Scenario.instants = instants_with_timer  # type: ignore[method-assign]
    undo = timeline.install() if timeline is not None else None
    try:
        with tempfile.TemporaryDirectory(dir=results) as tmp:
            stats = measure_cronloop(scenario, tmp_dir=Path(tmp))
    finally:
        StartLog.record = record  # type: ignore[method-assign]
        Scenario.instants = instants  # type: ignore[method-assign]
        gc.callbacks.remove(window.on_gc)
        if undo is not None:
            undo()
    if window.start is None or window.end is None:
        raise RuntimeError("the probe missed the first instant or the last start")
    (loop0, writer0, wall0), (loop1, writer1, wall1) = window.start, window.end
    n = scenario.n
    inside = [pause for started, pause in window.pauses if wall0 <= started <= wall1]
    return Reading(
        runs_per_s=stats.runs_per_s,
        p99_ms=stats.p99_ms,
        loop_cpu_us=(loop1 - loop0) / n * 1e6,
        writer_cpu_us=(writer1 - writer0) / n * 1e6,
        wall_us=(wall1 - wall0) / n * 1e6,
        gc_collections=len(inside),
        gc_pause_ms=sum(inside) * 1e3,
        stages=() if timeline is None else timeline.split(due),
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trigger_probe")
    parser.add_argument("load", choices=["burst", "spread"], nargs="?", default="burst")
    parser.add_argument("-n", type=int, default=10_000, help="runs (default 10,000)")
    parser.add_argument("--rate", type=float, default=2_000.0, help="spread: runs per second")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--stages", action="store_true", help="split each run's lateness in three stages"
    )
    args = parser.parse_args()
    if args.load == "burst":
        scenario = Scenario.burst(args.n)
    else:
        scenario = Scenario.spread(args.n, args.n / args.rate)
    readings = []
    for _ in range(args.repeats):
        reading = probe(scenario, stages=args.stages)
        readings.append(reading)
        print(reading.line(), flush=True)
    if len(readings) > 1:
        fields = [name for name in Reading.__dataclass_fields__ if name != "stages"]
        medians = {name: statistics.median(getattr(r, name) for r in readings) for name in fields}
        median = Reading(
            **medians,
            stages=tuple(
                (
                    statistics.median(r.stages[i][0] for r in readings),
                    statistics.median(r.stages[i][1] for r in readings),
                )
                for i in range(len(readings[0].stages))
            ),
        )
        print("median:", median.line())


if __name__ == "__main__":
    main()

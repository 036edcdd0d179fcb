"""Benchmark suite ``runtime_inline``: the event-loop cost of an attempt in the inline runtime.

Each cronloop attempt runs a no-op callable (``bench.runtime_inline:noop``, an ``async def``,
or ``noop_sync``, a plain function) through :class:`InlineRuntime` end to end: ``start()``
(which returns after ``Running`` was delivered), the call itself, the terminal report, and
the attempt's retirement into the finished table. The attempts are started the way the Job
controller starts them: ``asyncio.gather`` of ``start()`` calls, 256 at a time, and the clock
stops when every terminal report has reached the (plain, synchronous) report callback.

The baseline, measured in the same run and interleaved with it block by block, is the floor of
"run a coroutine and tell someone": ``loop.create_task(noop())`` per attempt with a done
callback that calls the same report callback twice (with a report built once, up front). For
sync callables the baseline is ``loop.run_in_executor`` on a pool of the runtime's size, with
the same done callback: the obvious way to run them, not a floor (the runtime no longer submits
one pool item per call).

The specs are built before the clock starts: building them is the controller's cost, not the
runtime's. Event-loop CPU is ``time.thread_time()`` of the loop's thread, so it leaves out the
worker threads that run sync callables (their process-wide CPU is listed separately).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import Comparison, Measurement
from cronloop.api.phase import Phase
from cronloop.runtimes.inline import InlineRuntime
from cronloop.runtimes.report import AttemptReport, Reason
from cronloop.runtimes.spec import AttemptSpec, InlineSettings

BATCH = 256
WORKERS = 8


async def noop() -> None:
    """The async subject: nothing at all."""


def noop_sync() -> None:
    """The sync subject: nothing at all (still a hop to a worker thread and back)."""


class _Counter:
    """The report callback: counts terminal reports and wakes the bench when all have come."""

    def __init__(self) -> None:
        self.expected = 0
        self.terminal = 0
        self.failed = 0
        self.all_done: asyncio.Future[None] | None = None

    def arm(self, expected: int) -> asyncio.Future[None]:
        self.expected, self.terminal, self.failed = expected, 0, 0
        self.all_done = asyncio.get_running_loop().create_future()
        return self.all_done

    def __call__(self, report: AttemptReport) -> None:
        if report.phase.terminal:
            self.terminal += 1
            if report.phase is not Phase.SUCCEEDED:
                self.failed += 1
            if self.terminal == self.expected and self.all_done is not None:
                self.all_done.set_result(None)


@dataclass
class _Sample:
    seconds: float
    loop_cpu: float  # time.thread_time() of the loop's thread
    process_cpu: float  # time.process_time(): every thread


def _specs(settings: InlineSettings, tag: str, count: int, log_dir: Path) -> list[AttemptSpec]:
    return [
        AttemptSpec(
            attempt_id=f"{tag}-{i}",
            session="bench",
            job="bench",
            subjob="bench-local",
            target="local",
            step="main",
            attempt=1,
            settings=settings,
            log_path=log_dir / f"{tag}-{i}.log",
        )
        for i in range(count)
    ]


async def _measure(body: Callable[[], Any]) -> _Sample:
    gc.collect()
    wall, loop_cpu, cpu = time.perf_counter(), time.thread_time(), time.process_time()
    await body()
    return _Sample(
        time.perf_counter() - wall, time.thread_time() - loop_cpu, time.process_time() - cpu
    )


async def _cronloop(runtime: InlineRuntime, specs: list[AttemptSpec], counter: _Counter) -> None:
    all_done = counter.arm(len(specs))
    for first in range(0, len(specs), BATCH):
        await asyncio.gather(*(runtime.start(s, counter) for s in specs[first : first + BATCH]))
    async with asyncio.timeout(60):
        await all_done
    if counter.failed:
        raise RuntimeError(f"{counter.failed} benchmark attempts did not succeed")


def _baseline_report() -> AttemptReport:
    now = datetime.now(UTC)
    return AttemptReport(
        attempt_id="baseline",
        session="bench",
        seq=2,
        phase=Phase.SUCCEEDED,
        reason=Reason.COMPLETED,
        started_at=now,
        finished_at=now,
        reported_at=now,
    )


async def _bare_async(count: int, counter: _Counter) -> None:
    loop = asyncio.get_running_loop()
    all_done = counter.arm(2 * count)  # both calls count as terminal: the report is shared
    report = _baseline_report()

    def tell(_: asyncio.Future[None]) -> None:
        counter(report)
        counter(report)

    for first in range(0, count, BATCH):
        for _ in range(min(BATCH, count - first)):
            loop.create_task(noop()).add_done_callback(tell)
        await asyncio.sleep(0)
    async with asyncio.timeout(60):
        await all_done


async def _bare_sync(count: int, counter: _Counter, pool: concurrent.futures.Executor) -> None:
    loop = asyncio.get_running_loop()
    all_done = counter.arm(2 * count)  # both calls count as terminal: the report is shared
    report = _baseline_report()

    def tell(_: asyncio.Future[None]) -> None:
        counter(report)
        counter(report)

    for first in range(0, count, BATCH):
        for _ in range(min(BATCH, count - first)):
            loop.run_in_executor(pool, noop_sync).add_done_callback(tell)
        await asyncio.sleep(0)
    async with asyncio.timeout(60):
        await all_done


@dataclass
class _Run:
    ours: _Sample
    base: _Sample


def _add(a: _Sample, b: _Sample) -> _Sample:
    return _Sample(a.seconds + b.seconds, a.loop_cpu + b.loop_cpu, a.process_cpu + b.process_cpu)


async def _one_run(kind: str, count: int, blocks: int, log_dir: Path, tag: str) -> _Run:
    """One run of ``count`` attempts of each subject. The machine's load drifts, so cronloop
    and the baseline alternate in ``blocks`` blocks (and swap who goes first each block)."""
    settings = InlineSettings(f"{__name__}:{'noop' if kind == 'async' else 'noop_sync'}")
    size = count // blocks
    runtime = InlineRuntime(max_workers=WORKERS)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS)
    counter = _Counter()
    ours = base = _Sample(0.0, 0.0, 0.0)
    try:
        for block in range(blocks):
            specs = _specs(settings, f"{tag}-b{block}", size, log_dir)

            async def run_ours(specs: list[AttemptSpec] = specs) -> None:
                await _cronloop(runtime, specs, counter)

            async def run_base() -> None:
                if kind == "async":
                    await _bare_async(size, counter)
                else:
                    await _bare_sync(size, counter, pool)

            if block % 2:
                ours = _add(ours, await _measure(run_ours))
                base = _add(base, await _measure(run_base))
            else:
                base = _add(base, await _measure(run_base))
                ours = _add(ours, await _measure(run_ours))
    finally:
        await runtime.aclose()
        pool.shutdown(wait=True)
    if any(log_dir.iterdir()):  # noqa: ASYNC240 - once, after the timed blocks
        raise RuntimeError("a no-op attempt created its (lazy) log file")
    return _Run(ours, base)


async def run(quick: bool) -> list[Comparison]:
    runs, count, blocks = (3, 2_000, 2) if quick else (7, 20_000, 8)
    rows: list[Comparison] = []
    with tempfile.TemporaryDirectory(prefix="cronloop-bench-") as tmp:
        log_dir = Path(tmp)
        for kind in ("async", "sync"):
            await _one_run(kind, min(count, 2_000), 2, log_dir, f"{kind}-warm-up")
            results = [
                await _one_run(kind, count, blocks, log_dir, f"{kind}-r{r}") for r in range(runs)
            ]
            rows += _rows(kind, results, count)
    return rows


def _rows(kind: str, results: list[_Run], count: int) -> list[Comparison]:
    subject = f"InlineRuntime, {'async def' if kind == 'async' else 'sync'} no-op"
    if kind == "async":
        baseline = "create_task + done callback"
        what = "async def no-op attempts"
    else:
        baseline = "run_in_executor + done callback"
        what = "sync no-op attempts (worker threads)"
    extra = {
        "attempts per run": f"{count:,}, started {BATCH} at a time with asyncio.gather",
        "wall time per attempt (median)": (
            f"cronloop {statistics.median(r.ours.seconds for r in results) / count * 1e6:.1f} µs,"
            f" baseline {statistics.median(r.base.seconds for r in results) / count * 1e6:.1f} µs"
        ),
        "load average at the end": f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
    }
    if kind == "sync":
        extra["process CPU per attempt, all threads (median)"] = (
            f"cronloop {statistics.median(r.ours.process_cpu for r in results) / count * 1e6:.1f}"
            f" µs, baseline "
            f"{statistics.median(r.base.process_cpu for r in results) / count * 1e6:.1f} µs"
        )
    if kind == "async":
        notes = (
            "start() through Running, the call, the terminal report and retirement, against "
            "the bare asyncio floor that calls the same callback twice"
        )
        cpu_notes = (
            "time.thread_time() of the event loop's thread per attempt, including the task "
            "that asyncio.gather wraps around each start() (about 3 µs of it); the baseline's "
            "is the floor any runtime pays"
        )
    else:
        notes = (
            "the runtime's 8 worker threads take calls from one queue; the baseline submits "
            "each call to a pool of 8 with run_in_executor (as the runtime itself used to; "
            "see docs/runtimes.md)"
        )
        cpu_notes = (
            "time.thread_time() of the event loop's thread per attempt; the worker threads' "
            "CPU is not in it (the process-wide CPU per attempt is listed below)"
        )
    throughput = Comparison(
        name=what,
        metric="throughput",
        unit="attempts/s",
        cronloop=Measurement(subject, tuple(count / r.ours.seconds for r in results)),
        baseline=Measurement(baseline, tuple(count / r.base.seconds for r in results)),
        notes=notes,
        extra=extra,
    )
    cpu = Comparison(
        name=f"{what}, event-loop CPU",
        metric="cost per attempt",
        unit="µs",
        cronloop=Measurement(subject, tuple(r.ours.loop_cpu / count * 1e6 for r in results)),
        baseline=Measurement(baseline, tuple(r.base.loop_cpu / count * 1e6 for r in results)),
        higher_is_better=False,
        target=40.0 if kind == "async" else None,
        target_absolute=kind == "async",
        notes=cpu_notes,
    )
    return [throughput, cpu]

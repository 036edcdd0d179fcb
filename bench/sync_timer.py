"""Benchmark suite ``sync_timer``: what a final cancel and bounded fan-out cost.

Rows (every one against a baseline measured in the same run, median of several runs):

- ``Timer.start`` vs ``loop.call_at``: nanoseconds per arming, 100,000 timers.
- ``Timer.cancel`` vs ``TimerHandle.cancel``: nanoseconds per cancel of 100,000 armed timers.
- arm + fire through a dispatcher: 100,000 timers due at once, each callback handed to a serial
  owner (``loop.call_soon``), against the naive ``call_at`` that posts the callback with no
  generation check (seed 001's first attempt): the price of the check.
- ``parallelize`` vs ``asyncio.gather`` of one task per piece behind a semaphore: microseconds
  per trivial piece, 100,000 pieces, 16 workers (chunk size 1 and 64).

Run: ``.venv/bin/python -m bench sync_timer``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from bench.harness import Comparison, Measurement
from cronloop.sync.parallel import parallelize_until
from cronloop.sync.timer import Timer

__all__ = ["run"]

FAR = 3600.0  # armed timers never come due while a benchmark runs


class _CallSoonDispatcher:
    """The cheapest serial owner on one loop: FIFO ``call_soon``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def post(self, fn: Callable[..., object], /, *args: object) -> object:
        self._loop.call_soon(fn, *args)
        return True


def _noop() -> None:
    return None


async def _settle() -> None:
    # One loop iteration drops cancelled handles from the heap between samples.
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def _arm_timer(n: int) -> float:
    timers = [Timer(_noop) for _ in range(n)]
    start = time.perf_counter()
    for timer in timers:
        timer.start(FAR)
    elapsed = time.perf_counter() - start
    for timer in timers:
        timer.cancel()
    await _settle()
    return elapsed / n * 1e9


async def _arm_call_at(n: int) -> float:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    when = loop.time() + FAR
    handles = [loop.call_at(when, _noop) for _ in range(n)]
    elapsed = time.perf_counter() - start
    for handle in handles:
        handle.cancel()
    await _settle()
    return elapsed / n * 1e9


async def _cancel_timer(n: int) -> float:
    timers = [Timer(_noop) for _ in range(n)]
    for timer in timers:
        timer.start(FAR)
    start = time.perf_counter()
    for timer in timers:
        timer.cancel()
    elapsed = time.perf_counter() - start
    await _settle()
    return elapsed / n * 1e9


async def _cancel_handle(n: int) -> float:
    loop = asyncio.get_running_loop()
    when = loop.time() + FAR
    handles = [loop.call_at(when, _noop) for _ in range(n)]
    start = time.perf_counter()
    for handle in handles:
        handle.cancel()
    elapsed = time.perf_counter() - start
    await _settle()
    return elapsed / n * 1e9


async def _fire_timer(n: int) -> float:
    loop = asyncio.get_running_loop()
    dispatcher = _CallSoonDispatcher(loop)
    done = loop.create_future()
    count = 0

    def callback() -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set_result(None)

    timers = [Timer(callback, dispatcher=dispatcher) for _ in range(n)]
    start = time.perf_counter()
    when = loop.time()
    for timer in timers:
        timer.start_at(when)
    await done
    return (time.perf_counter() - start) / n * 1e9


async def _fire_naive(n: int) -> float:
    loop = asyncio.get_running_loop()
    dispatcher = _CallSoonDispatcher(loop)
    done = loop.create_future()
    count = 0

    def callback() -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set_result(None)

    start = time.perf_counter()
    when = loop.time()
    for _ in range(n):
        loop.call_at(when, dispatcher.post, callback)
    await done
    return (time.perf_counter() - start) / n * 1e9


async def _piece(_: int) -> None:
    return None


def _parallelize(chunk_size: int) -> Callable[[int, int], Awaitable[float]]:
    async def measure(workers: int, n: int) -> float:
        start = time.perf_counter()
        await parallelize_until(None, workers, n, _piece, chunk_size=chunk_size)
        return (time.perf_counter() - start) / n * 1e6

    return measure


async def _gather_semaphore(workers: int, n: int) -> float:
    semaphore = asyncio.Semaphore(workers)

    async def guarded(i: int) -> None:
        async with semaphore:
            await _piece(i)

    start = time.perf_counter()
    await asyncio.gather(*(guarded(i) for i in range(n)))
    return (time.perf_counter() - start) / n * 1e6


async def _samples(runs: int, fn: Callable[[], Awaitable[float]]) -> tuple[float, ...]:
    return tuple([await fn() for _ in range(runs)])


async def _pair(
    runs: int,
    ours: Callable[[], Awaitable[float]],
    theirs: Callable[[], Awaitable[float]],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Interleave the subjects so that drift of the machine hits both alike.
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        a.append(await ours())
        b.append(await theirs())
    return tuple(a), tuple(b)


async def run(quick: bool) -> list[Comparison]:
    """Measure every row; quick mode uses 10,000 items and 3 runs."""
    n = 10_000 if quick else 100_000
    runs = 3 if quick else 7
    workers = 16
    rows: list[Comparison] = []

    def row(
        name: str,
        unit: str,
        ours: tuple[float, ...],
        base_name: str,
        base: tuple[float, ...],
        notes: str,
    ) -> Comparison:
        return Comparison(
            name=name,
            metric="cost per op",
            unit=unit,
            cronloop=Measurement(name, ours),
            baseline=Measurement(base_name, base),
            higher_is_better=False,
            notes=notes,
            extra={"items": f"{n:,}"},
        )

    ours, base = await _pair(runs, lambda: _arm_timer(n), lambda: _arm_call_at(n))
    rows.append(
        row(
            "Timer.start",
            "ns",
            ours,
            "loop.call_at",
            base,
            "arming a pre-built Timer: a lock, a generation bump and one call_at",
        )
    )
    ours, base = await _pair(runs, lambda: _cancel_timer(n), lambda: _cancel_handle(n))
    rows.append(
        row(
            "Timer.cancel",
            "ns",
            ours,
            "TimerHandle.cancel",
            base,
            "cancel on the loop thread; from another thread it also posts the handle drop",
        )
    )
    ours, base = await _pair(runs, lambda: _fire_timer(n), lambda: _fire_naive(n))
    rows.append(
        row(
            "arm + fire via dispatcher",
            "ns",
            ours,
            "call_at posting without a generation check",
            base,
            "all timers due at once; the baseline is seed 001's racy timer",
        )
    )
    for chunk in (1, 64):
        ours, base = await _pair(
            runs,
            lambda chunk=chunk: _parallelize(chunk)(workers, n),  # type: ignore[misc]
            lambda: _gather_semaphore(workers, n),
        )
        rows.append(
            row(
                f"parallelize, chunk {chunk}",
                "µs",
                ours,
                "gather + Semaphore (task per piece)",
                base,
                f"{workers} workers, trivial async pieces",
            )
        )
    return rows

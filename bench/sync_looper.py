"""Benchmark suite ``sync_looper``: Looper and KeyedLooper against plain asyncio designs.

Rows:
1. Looper throughput (sync no-op handlers posted by a producer, run by the consumer) against a
   bare ``asyncio.Queue`` consumer loop doing the same: the floor any serial executor pays.
   Once with a burst of 100,000 handlers and once with 1,000,000: a burst that large makes the
   cyclic GC rescan the queued handles (the baseline queues no new objects), which is where
   the ratio drops.
2. KeyedLooper throughput with many keys against the naive per-key design (one
   ``asyncio.Queue`` and one consumer task per key, created on the key's first post).
3. Peak traced memory (tracemalloc) of the same two designs in the same scenario.

Every sample runs in a fresh event loop after a full garbage collection; samples of the
cronloop subject and its baseline alternate so machine noise hits both alike.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any

from bench.harness import Comparison, Measurement
from cronloop.sync.keyed import KeyedLooper
from cronloop.sync.looper import Looper

SUITE = "sync_looper"


def _noop() -> None:
    pass


# -- row 1: Looper vs a bare asyncio.Queue consumer -------------------------------------------


async def _queue_consumer(n: int) -> float:
    queue: asyncio.Queue[Callable[[], None]] = asyncio.Queue()

    async def consume() -> None:
        for _ in range(n):
            fn = await queue.get()
            fn()

    start = time.perf_counter()
    consumer = asyncio.create_task(consume())
    for _ in range(n):
        queue.put_nowait(_noop)
    await consumer
    return n / (time.perf_counter() - start)


async def _looper(n: int) -> float:
    looper = Looper(name="bench")
    looper.start()
    post = looper.post
    start = time.perf_counter()
    for _ in range(n - 1):
        post(_noop)
    await post(_noop)
    elapsed = time.perf_counter() - start
    looper.quit()
    await looper.wait_closed()
    return n / elapsed


# -- rows 2 and 3: KeyedLooper vs one queue and one task per key -------------------------------


async def _per_key_tasks(keys: int, n: int) -> float:
    """The naive design: each key gets its own asyncio.Queue and consumer task."""
    queues: dict[int, asyncio.Queue[Callable[[], None] | None]] = {}
    tasks: list[asyncio.Task[None]] = []
    remaining = n
    done = asyncio.get_running_loop().create_future()

    async def consume(queue: asyncio.Queue[Callable[[], None] | None]) -> None:
        nonlocal remaining
        while (fn := await queue.get()) is not None:
            fn()
            remaining -= 1
            if not remaining:
                done.set_result(None)

    start = time.perf_counter()
    for i in range(n):
        key = i % keys
        queue = queues.get(key)
        if queue is None:
            queue = queues[key] = asyncio.Queue()
            tasks.append(asyncio.create_task(consume(queue)))
        queue.put_nowait(_noop)
    await done
    elapsed = time.perf_counter() - start
    for queue in queues.values():
        queue.put_nowait(None)
    await asyncio.gather(*tasks)
    return n / elapsed


async def _keyed_looper(keys: int, n: int) -> float:
    looper: KeyedLooper[int] = KeyedLooper(name="bench")
    looper.start()
    post = looper.post
    start = time.perf_counter()
    for i in range(n):
        post(i % keys, _noop)
    await looper.wait_idle()
    elapsed = time.perf_counter() - start
    looper.quit()
    await looper.wait_closed()
    return n / elapsed


def _sample(make: Callable[[], Coroutine[Any, Any, float]]) -> float:
    gc.collect()
    return asyncio.run(make())


def _peak_mib(make: Callable[[], Coroutine[Any, Any, float]]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        asyncio.run(make())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def _alternate(
    runs: int,
    measure: Callable[[Callable[[], Coroutine[Any, Any, float]]], float],
    cronloop: Callable[[], Coroutine[Any, Any, float]],
    baseline: Callable[[], Coroutine[Any, Any, float]],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(runs):
        ours.append(measure(cronloop))
        theirs.append(measure(baseline))
    return tuple(ours), tuple(theirs)


def _looper_row(runs: int, n: int) -> Comparison:
    looper, queue = _alternate(runs, _sample, lambda: _looper(n), lambda: _queue_consumer(n))
    return Comparison(
        name=f"Looper, burst of {n:,} sync no-op handlers",
        metric="throughput",
        unit="handlers/s",
        cronloop=Measurement("Looper.post + consumer", looper),
        baseline=Measurement("bare asyncio.Queue consumer loop", queue),
        target=0.5,
        notes=(
            "the baseline queues the same function object N times; the Looper allocates one "
            "Handle per post (cancel, await, thread waits), which the cyclic GC rescans while "
            "the burst is queued, so the ratio falls as the burst grows"
        ),
    )


def run(quick: bool) -> list[Comparison]:
    """Measure every row (quick: smaller sizes and fewer runs)."""
    # Machine noise (a descheduled process) can make a no-op "slow"; keep the table readable.
    logging.getLogger("cronloop.sync.looper").setLevel(logging.ERROR)
    runs = 3 if quick else 7
    sizes = (20_000,) if quick else (100_000, 1_000_000)
    keys, handlers = (1_000, 50_000) if quick else (10_000, 1_000_000)
    memory_runs = 3 if quick else 5

    rows = [_looper_row(runs, n) for n in sizes]
    keyed, per_key = _alternate(
        runs,
        _sample,
        lambda: _keyed_looper(keys, handlers),
        lambda: _per_key_tasks(keys, handlers),
    )
    keyed_mem, per_key_mem = _alternate(
        memory_runs,
        _peak_mib,
        lambda: _keyed_looper(keys, handlers),
        lambda: _per_key_tasks(keys, handlers),
    )
    scenario = f"{keys:,} keys x {handlers:,} sync handlers"
    return [
        *rows,
        Comparison(
            name=f"KeyedLooper, {scenario}",
            metric="throughput",
            unit="handlers/s",
            cronloop=Measurement("KeyedLooper (16 workers)", keyed),
            baseline=Measurement("asyncio.Queue + task per key", per_key),
            notes="all handlers posted first, then run; includes creating per-key state",
        ),
        Comparison(
            name=f"KeyedLooper peak memory, {scenario}",
            metric="tracemalloc peak",
            unit="MiB",
            cronloop=Measurement("KeyedLooper (16 workers)", keyed_mem),
            baseline=Measurement("asyncio.Queue + task per key", per_key_mem),
            higher_is_better=False,
            notes=(
                "KeyedLooper keeps a cancellable, awaitable Handle per posted handler; the "
                "baseline keeps only the callable in its queues but a task per key"
            ),
        ),
    ]

"""Benchmark suite ``sync_workqueue``: the WorkQueue family against bare asyncio equivalents.

Rows (each the median of several runs, cronloop and baseline alternating in the same process):

- add+get+done with one worker, keys queued up front, vs ``asyncio.Queue`` put/get/task_done;
- the same with the worker blocked in ``get`` for every key (producer hands over one at a time);
- dedup-heavy load (every key added 10 times per round) vs ``asyncio.Queue`` plus a hand-kept set;
- add_after of 100 000 keys until all are handed out, vs one raw ``loop.call_at`` per key;
- rate-limited requeue (add_rate_limited + get + done) vs a hand-rolled exponential backoff with
  ``loop.call_at`` into an ``asyncio.Queue``.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.harness import Comparison, Measurement
from cronloop.sync.ratelimit import ItemExponentialFailureRateLimiter
from cronloop.sync.workqueue import DelayingQueue, RateLimitingQueue, WorkQueue

Bench = Callable[[int], Awaitable[float]]


async def _timed(body: Callable[[], Awaitable[None]]) -> float:
    gc.collect()
    start = time.perf_counter()
    await body()
    return time.perf_counter() - start


# -- add + get + done --------------------------------------------------------------------------


async def wq_cycles(n: int) -> float:
    queue = WorkQueue[int]()

    async def body() -> None:
        for i in range(n):
            queue.add(i)
        for _ in range(n):
            queue.done(await queue.get())

    return n / await _timed(body)


async def aq_cycles(n: int) -> float:
    queue = asyncio.Queue[int]()

    async def body() -> None:
        for i in range(n):
            queue.put_nowait(i)
        for _ in range(n):
            await queue.get()
            queue.task_done()

    return n / await _timed(body)


async def wq_handover(n: int) -> float:
    queue = WorkQueue[int]()

    async def worker() -> None:
        for _ in range(n):
            queue.done(await queue.get())

    async def body() -> None:
        task = asyncio.create_task(worker())
        for i in range(n):
            queue.add(i)
            await asyncio.sleep(0)
        await task

    return n / await _timed(body)


async def aq_handover(n: int) -> float:
    queue = asyncio.Queue[int]()

    async def worker() -> None:
        for _ in range(n):
            await queue.get()
            queue.task_done()

    async def body() -> None:
        task = asyncio.create_task(worker())
        for i in range(n):
            queue.put_nowait(i)
            await asyncio.sleep(0)
        await task

    return n / await _timed(body)


# -- dedup-heavy -------------------------------------------------------------------------------

_DEDUP_KEYS = 1000
_DEDUP_REPEAT = 10


async def wq_dedup(n: int) -> float:
    queue = WorkQueue[int]()
    rounds = n // (_DEDUP_KEYS * _DEDUP_REPEAT)

    async def body() -> None:
        for _ in range(rounds):
            for _ in range(_DEDUP_REPEAT):
                for key in range(_DEDUP_KEYS):
                    queue.add(key)
            while len(queue):
                queue.done(await queue.get())

    return rounds * _DEDUP_KEYS * _DEDUP_REPEAT / await _timed(body)


async def aq_dedup(n: int) -> float:
    queue = asyncio.Queue[int]()
    pending: set[int] = set()
    rounds = n // (_DEDUP_KEYS * _DEDUP_REPEAT)

    async def body() -> None:
        for _ in range(rounds):
            for _ in range(_DEDUP_REPEAT):
                for key in range(_DEDUP_KEYS):
                    if key not in pending:
                        pending.add(key)
                        queue.put_nowait(key)
            while not queue.empty():
                key = await queue.get()
                pending.discard(key)
                queue.task_done()

    return rounds * _DEDUP_KEYS * _DEDUP_REPEAT / await _timed(body)


# -- add_after ---------------------------------------------------------------------------------


def _delays(n: int) -> list[float]:
    rng = random.Random(7)
    return [rng.uniform(0.0, 0.002) for _ in range(n)]


async def wq_add_after(n: int) -> float:
    queue = DelayingQueue[int]()
    delays = _delays(n)

    async def body() -> None:
        for key, delay in enumerate(delays):
            queue.add_after(key, delay)
        for _ in range(n):
            queue.done(await queue.get())

    return n / await _timed(body)


async def call_at_add_after(n: int) -> float:
    loop = asyncio.get_running_loop()
    delays = _delays(n)
    fired: list[int] = []
    all_fired = loop.create_future()

    def fire(key: int) -> None:
        fired.append(key)
        if len(fired) == n:
            all_fired.set_result(None)

    async def body() -> None:
        now = loop.time()
        for key, delay in enumerate(delays):
            loop.call_at(now + delay, fire, key)
        await all_fired

    return n / await _timed(body)


# -- rate-limited requeue ----------------------------------------------------------------------


async def wq_rate_limited(n: int) -> float:
    keys = 1000
    queue = RateLimitingQueue[int](ItemExponentialFailureRateLimiter(1e-6, 1e-4))

    async def body() -> None:
        for key in range(keys):
            queue.add(key)
        for _ in range(n):
            key = await queue.get()
            queue.add_rate_limited(key)
            queue.done(key)

    rate = n / await _timed(body)
    queue.shutdown()
    return rate


async def hand_rolled_rate_limited(n: int) -> float:
    keys = 1000
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue[int]()
    failures: dict[int, int] = {}
    handles: list[asyncio.TimerHandle] = []

    async def body() -> None:
        for key in range(keys):
            queue.put_nowait(key)
        for _ in range(n):
            key = await queue.get()
            exp = failures.get(key, 0)
            failures[key] = exp + 1
            delay = min(1e-6 * 2.0**exp, 1e-4)
            handles.append(loop.call_at(loop.time() + delay, queue.put_nowait, key))
            queue.task_done()
            if len(handles) > 4096:
                handles.clear()

    rate = n / await _timed(body)
    for handle in handles:
        handle.cancel()
    return rate


async def _compare(runs: int, n: int, ours: Bench, base: Bench) -> tuple[Measurement, Measurement]:
    mine: list[float] = []
    theirs: list[float] = []
    for _ in range(runs):
        mine.append(await ours(n))
        theirs.append(await base(n))
    return (
        Measurement("cronloop", tuple(mine)),
        Measurement(base.__name__.split("_")[0], tuple(theirs)),
    )


def _measured(subject: str, m: Measurement) -> Measurement:
    return Measurement(subject, m.samples)


@dataclass(frozen=True)
class _Row:
    """One comparison: what is measured, by which pair of benches, on how many items."""

    name: str
    metric: str
    ours: Bench
    base: Bench
    subject: str
    baseline: str
    notes: str
    delayed: bool = False
    target: float | None = None


async def run(quick: bool) -> list[Comparison]:
    """Measure every row; ``quick`` uses fewer runs and smaller sizes."""
    runs = 3 if quick else 7
    n = 20_000 if quick else 200_000
    n_delay = 10_000 if quick else 100_000
    table = [
        _Row(
            "add+get+done, 1 worker",
            "cycles/s",
            wq_cycles,
            aq_cycles,
            "WorkQueue",
            "asyncio.Queue put/get/task_done",
            f"{n:,} unique keys queued, then taken by one worker (no suspension).",
            target=300_000,
        ),
        _Row(
            "add+get+done, worker waits",
            "cycles/s",
            wq_handover,
            aq_handover,
            "WorkQueue",
            "asyncio.Queue put/get/task_done",
            "producer adds one key and yields; the worker is blocked in get each time.",
        ),
        _Row(
            "dedup-heavy adds",
            "adds/s",
            wq_dedup,
            aq_dedup,
            "WorkQueue",
            "asyncio.Queue + pending set",
            f"{_DEDUP_KEYS} keys each added {_DEDUP_REPEAT}x per round, then drained.",
        ),
        _Row(
            f"add_after {n_delay:,} keys",
            "keys/s",
            wq_add_after,
            call_at_add_after,
            "DelayingQueue (one heap, one timer)",
            "loop.call_at per key",
            "delays uniform in 0-2 ms; time until every key is handed out / fired.",
            delayed=True,
        ),
        _Row(
            "rate-limited requeue",
            "get+add_rate_limited+done",
            wq_rate_limited,
            hand_rolled_rate_limited,
            "RateLimitingQueue (exponential)",
            "asyncio.Queue + dict + call_at backoff",
            "1,000 keys, every get fails and is requeued with backoff 1 µs..100 µs.",
        ),
    ]
    rows: list[Comparison] = []
    for row in table:
        ours, base = await _compare(runs, n_delay if row.delayed else n, row.ours, row.base)
        rows.append(
            Comparison(
                name=row.name,
                metric=row.metric,
                unit="ops/s",
                cronloop=_measured(row.subject, ours),
                baseline=_measured(row.baseline, base),
                target=row.target,
                target_absolute=row.target is not None,
                notes=row.notes,
            )
        )
    return rows

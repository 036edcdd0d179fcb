from __future__ import annotations

import asyncio
import math
import random
import threading
from collections.abc import Hashable
from typing import TypeVar

import anyio
import pytest

from cronloop.sync.ratelimit import ItemExponentialFailureRateLimiter, MaxOfRateLimiter
from cronloop.sync.workqueue import (
    DelayingQueue,
    RateLimitingQueue,
    ShutDown,
    WorkQueue,
    WorkQueueStatistics,
    WouldBlock,
)

K = TypeVar("K", bound=Hashable)


def drain_nowait(queue: WorkQueue[K]) -> list[K]:
    """Take (and finish) every key that is ready now."""
    taken: list[K] = []
    while True:
        try:
            key = queue.get_nowait()
        except WouldBlock:
            return taken
        taken.append(key)
        queue.done(key)


class CountingLimiter:
    """A fixed delay per call, counting calls."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    def when(self, item: Hashable) -> float:
        self.calls += 1
        return self.delay

    def forget(self, item: Hashable) -> None:
        pass

    def num_requeues(self, item: Hashable) -> int:
        return self.calls


# -- plain queue -----------------------------------------------------------------------------


async def test_fifo_in_add_order() -> None:
    queue = WorkQueue[str]()
    for key in "cab":
        queue.add(key)
    assert [await queue.get() for _ in range(3)] == ["c", "a", "b"]


async def test_adds_while_waiting_collapse() -> None:
    queue = WorkQueue[str]()
    for key in "abab":
        queue.add(key)
    assert len(queue) == queue.len() == 2
    assert drain_nowait(queue) == ["a", "b"]


async def test_key_being_processed_is_not_handed_out_again() -> None:
    queue = WorkQueue[str]()
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")
    assert len(queue) == 0, "a key being processed waits for done"
    assert queue.statistics().dirty == 1
    with pytest.raises(WouldBlock):
        queue.get_nowait()
    queue.done("a")
    assert queue.get_nowait() == "a", "the re-add is served after done"


async def test_readd_while_processing_goes_to_the_tail() -> None:
    queue = WorkQueue[str]()
    queue.add("a")
    key = queue.get_nowait()
    queue.add("a")
    queue.add("b")
    queue.add("c")
    queue.done(key)
    assert drain_nowait(queue) == ["b", "c", "a"]


async def test_readd_while_processing_collapses_too() -> None:
    queue = WorkQueue[str]()
    queue.add("a")
    key = queue.get_nowait()
    queue.add("a")
    queue.add("a")
    queue.done(key)
    assert drain_nowait(queue) == ["a"]


async def test_done_without_readd_does_not_requeue() -> None:
    queue = WorkQueue[str]()
    queue.add("a")
    queue.done(queue.get_nowait())
    assert len(queue) == 0
    assert queue.statistics() == WorkQueueStatistics(
        queued=0, dirty=0, processing=0, waiting_getters=0, delayed=0, shutting_down=False
    )


async def test_done_of_a_key_not_processing_is_an_error() -> None:
    queue = WorkQueue[str]()
    with pytest.raises(ValueError, match=r"done\('x'\): the key is not being processed"):
        queue.done("x")
    queue.add("a")
    queue.done(queue.get_nowait())
    with pytest.raises(ValueError, match="not being processed"):
        queue.done("a")


async def test_get_nowait_would_block_is_anyios() -> None:
    queue = WorkQueue[int]()
    assert WouldBlock is anyio.WouldBlock
    with pytest.raises(anyio.WouldBlock):
        queue.get_nowait()


async def test_blocked_getters_are_served_in_order() -> None:
    queue = WorkQueue[str]()
    order: list[tuple[int, str]] = []

    async def worker(n: int) -> None:
        order.append((n, await queue.get()))

    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        for n in range(3):
            tg.create_task(worker(n))
        await asyncio.sleep(0)
        assert queue.statistics().waiting_getters == 3
        for key in "xyz":
            queue.add(key)
    assert order == [(0, "x"), (1, "y"), (2, "z")]


async def test_cancelled_getter_passes_its_wakeup_on() -> None:
    queue = WorkQueue[str]()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.add("a")  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs
    async with asyncio.timeout(5):
        assert await second == "a"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert queue.statistics().waiting_getters == 0


async def test_cancelled_getter_leaves_no_waiter_behind() -> None:
    queue = WorkQueue[str]()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert queue.statistics().waiting_getters == 0
    queue.add("a")
    assert queue.get_nowait() == "a"


async def test_add_after_shutdown_is_ignored() -> None:
    queue = WorkQueue[str]()
    queue.shutdown()
    queue.add("a")
    assert len(queue) == 0
    assert queue.shutting_down


async def test_get_drains_queued_keys_after_shutdown() -> None:
    queue = WorkQueue[str]()
    queue.add("a")
    queue.add("b")
    queue.shutdown()
    queue.shutdown()  # idempotent
    assert await queue.get() == "a"
    assert queue.get_nowait() == "b"
    with pytest.raises(ShutDown):
        await queue.get()
    with pytest.raises(ShutDown):
        queue.get_nowait()


async def test_shutdown_wakes_blocked_getters() -> None:
    queue = WorkQueue[str]()
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    queue.shutdown()
    async with asyncio.timeout(5):
        results = await asyncio.gather(*getters, return_exceptions=True)
    assert all(isinstance(r, ShutDown) for r in results)


async def test_readd_before_shutdown_is_still_served_after_done() -> None:
    queue = WorkQueue[str]()
    queue.add("a")
    key = queue.get_nowait()
    queue.add("a")
    queue.shutdown()
    queue.done(key)
    assert queue.get_nowait() == "a"


async def test_shutdown_with_drain_waits_for_processing() -> None:
    queue = WorkQueue[str]()
    queue.add("a")
    key = await queue.get()
    drain = asyncio.create_task(queue.shutdown_with_drain())
    await asyncio.sleep(0)
    assert not drain.done()
    assert queue.shutting_down
    queue.done(key)
    async with asyncio.timeout(5):
        await drain


async def test_shutdown_with_drain_returns_at_once_when_idle() -> None:
    queue = WorkQueue[str]()
    async with asyncio.timeout(5):
        await queue.shutdown_with_drain()
    assert queue.shutting_down


async def test_shutdown_aborts_a_drain() -> None:
    queue = WorkQueue[str]()
    queue.add("a")
    queue.get_nowait()
    drain = asyncio.create_task(queue.shutdown_with_drain())
    await asyncio.sleep(0)
    queue.shutdown()
    async with asyncio.timeout(5):
        await drain
    assert queue.statistics().processing == 1


async def test_cancelled_drain_is_forgotten() -> None:
    queue = WorkQueue[str]()
    queue.add("a")
    key = queue.get_nowait()
    drain = asyncio.create_task(queue.shutdown_with_drain())
    await asyncio.sleep(0)
    drain.cancel()
    with pytest.raises(asyncio.CancelledError):
        await drain
    queue.done(key)  # must not touch the cancelled waiter


async def test_add_threadsafe() -> None:
    queue = WorkQueue[int]()

    def produce() -> None:
        for i in range(100):
            queue.add_threadsafe(i)

    thread = threading.Thread(target=produce)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive()
    async with asyncio.timeout(5):
        assert [await queue.get() for _ in range(100)] == list(range(100))


def test_add_threadsafe_needs_a_loop() -> None:
    queue = WorkQueue[int]()  # created outside any loop: bound lazily
    with pytest.raises(RuntimeError, match="not bound to an event loop"):
        queue.add_threadsafe(1)
    queue.add(1)  # plain adds need no loop
    assert queue.get_nowait() == 1


def test_add_after_outside_a_loop_needs_a_bound_queue() -> None:
    queue = DelayingQueue[int]()
    queue.add_after(1, 0)  # immediate adds need no loop
    with pytest.raises(RuntimeError):
        queue.add_after(2, 1.0)
    assert queue.get_nowait() == 1


async def test_repr_and_name() -> None:
    queue = DelayingQueue[str](name="jobs")
    queue.add("a")
    assert queue.name == "jobs"
    assert repr(queue) == "<DelayingQueue name='jobs' queued=1 processing=0 delayed=0>"
    queue.shutdown()
    assert repr(queue).endswith("shutting-down>")


# -- delaying queue --------------------------------------------------------------------------


@pytest.mark.looptime
async def test_add_after_waits_exactly() -> None:
    loop = asyncio.get_running_loop()
    queue = DelayingQueue[str]()
    start = loop.time()
    queue.add_after("a", 5.0)
    assert len(queue) == 0
    assert queue.statistics().delayed == 1
    async with asyncio.timeout(60):
        assert await queue.get() == "a"
    assert loop.time() - start == 5.0
    assert queue.statistics().delayed == 0


@pytest.mark.looptime
@pytest.mark.parametrize("delay", [0.0, -1.0, -math.inf])
async def test_non_positive_delay_adds_at_once(delay: float) -> None:
    queue = DelayingQueue[str]()
    queue.add_after("a", delay)
    assert queue.get_nowait() == "a"


async def test_nan_delay_is_refused() -> None:
    queue = DelayingQueue[str]()
    with pytest.raises(ValueError, match="delay"):
        queue.add_after("a", math.nan)


@pytest.mark.looptime
async def test_earliest_ready_time_wins() -> None:
    loop = asyncio.get_running_loop()
    queue = DelayingQueue[str]()
    start = loop.time()
    queue.add_after("later-first", 10.0)
    queue.add_after("later-first", 3.0)
    queue.add_after("sooner-first", 4.0)
    queue.add_after("sooner-first", 20.0)
    assert queue.statistics().delayed == 2
    async with asyncio.timeout(60):
        assert await queue.get() == "later-first"
        assert loop.time() - start == 3.0
        assert await queue.get() == "sooner-first"
        assert loop.time() - start == 4.0
    await asyncio.sleep(100)
    assert len(queue) == 0, "the superseded ready times do not fire"


@pytest.mark.looptime
async def test_ready_keys_go_through_add_and_dedup() -> None:
    queue = DelayingQueue[str]()
    queue.add("a")
    queue.add_after("a", 1.0)
    await asyncio.sleep(2)
    assert drain_nowait(queue) == ["a"]


@pytest.mark.looptime
async def test_ready_key_being_processed_waits_for_done() -> None:
    queue = DelayingQueue[str]()
    queue.add("a")
    key = queue.get_nowait()
    queue.add_after("a", 1.0)
    await asyncio.sleep(2)
    assert len(queue) == 0
    queue.done(key)
    assert queue.get_nowait() == "a"


@pytest.mark.looptime
async def test_delayed_keys_come_out_in_ready_order_ties_by_insertion() -> None:
    rng = random.Random(42)
    queue = DelayingQueue[int]()
    delays = {key: float(rng.randint(1, 20)) for key in range(300)}
    for key, delay in delays.items():
        queue.add_after(key, delay)
    await asyncio.sleep(21)
    assert drain_nowait(queue) == sorted(delays, key=lambda k: (delays[k], k))


@pytest.mark.looptime
async def test_earlier_key_rearms_the_timer() -> None:
    loop = asyncio.get_running_loop()
    queue = DelayingQueue[str]()
    start = loop.time()
    queue.add_after("late", 100.0)
    queue.add_after("early", 1.0)
    async with asyncio.timeout(200):
        assert await queue.get() == "early"
        assert loop.time() - start == 1.0
        assert await queue.get() == "late"
        assert loop.time() - start == 100.0


@pytest.mark.looptime
async def test_moving_a_key_earlier_many_times_fires_once() -> None:
    loop = asyncio.get_running_loop()
    queue = DelayingQueue[str]()
    start = loop.time()
    for n in range(1000, 0, -1):
        queue.add_after("a", float(n))
        queue.add_after(f"other-{n}", 5000.0)  # keeps the heap from shrinking to one key
    async with asyncio.timeout(60):
        assert await queue.get() == "a"
    assert loop.time() - start == 1.0
    await asyncio.sleep(4000)
    assert len(queue) == 0
    assert queue.statistics().delayed == 1000


@pytest.mark.looptime
async def test_shutdown_drops_delayed_keys() -> None:
    queue = DelayingQueue[str]()
    queue.add("now")
    queue.add_after("later", 5.0)
    queue.shutdown()
    assert queue.statistics().delayed == 0
    await asyncio.sleep(10)
    assert queue.get_nowait() == "now"
    with pytest.raises(ShutDown):
        await queue.get()


@pytest.mark.looptime
async def test_add_after_after_shutdown_is_ignored() -> None:
    queue = DelayingQueue[str]()
    queue.shutdown()
    queue.add_after("a", 1.0)
    queue.add_after("b", 0.0)
    assert queue.statistics().delayed == 0
    assert len(queue) == 0


@pytest.mark.looptime
async def test_injected_clock_sets_ready_times() -> None:
    now = [1000.0]
    queue = DelayingQueue[str](clock=lambda: now[0])
    queue.add_after("a", 0.01)
    assert len(queue) == 0
    now[0] += 0.01
    async with asyncio.timeout(5):
        assert await queue.get() == "a"


# -- rate limiting queue ---------------------------------------------------------------------


@pytest.mark.looptime
async def test_add_rate_limited_backs_off_exponentially() -> None:
    loop = asyncio.get_running_loop()
    queue = RateLimitingQueue[str](ItemExponentialFailureRateLimiter(1.0, 100.0))
    start = loop.time()
    seen: list[float] = []
    async with asyncio.timeout(60):
        for _ in range(4):
            queue.add_rate_limited("a")
            key = await queue.get()
            seen.append(loop.time() - start)
            queue.done(key)
    assert seen == [1.0, 3.0, 7.0, 15.0]
    assert queue.num_requeues("a") == 4
    queue.forget("a")
    assert queue.num_requeues("a") == 0


@pytest.mark.looptime
async def test_forget_resets_the_backoff_but_is_not_done() -> None:
    queue = RateLimitingQueue[str](ItemExponentialFailureRateLimiter(1.0, 100.0))
    queue.add("a")
    key = queue.get_nowait()
    queue.add_rate_limited("a")
    queue.forget("a")
    assert queue.statistics().processing == 1
    queue.done(key)
    assert queue.rate_limiter.when("a") == 1.0


async def test_add_rate_limited_after_shutdown_does_not_consult_the_limiter() -> None:
    limiter = CountingLimiter(1.0)
    queue = RateLimitingQueue[str](limiter)
    queue.shutdown()
    queue.add_rate_limited("a")
    assert limiter.calls == 0


@pytest.mark.looptime
async def test_add_rate_limited_calls_when_once_per_retry() -> None:
    limiter = CountingLimiter(2.0)
    queue = RateLimitingQueue[str](limiter)
    queue.add_rate_limited("a")
    queue.add_rate_limited("a")
    assert limiter.calls == 2
    assert queue.statistics().delayed == 1
    await asyncio.sleep(2)
    assert drain_nowait(queue) == ["a"]


async def test_default_rate_limiter_is_the_controller_one() -> None:
    queue = RateLimitingQueue[str]()
    assert isinstance(queue.rate_limiter, MaxOfRateLimiter)
    assert queue.rate_limiter.when("a") == 0.005
    assert queue.rate_limiter.when("a") == 0.01

"""Tests of the KeyedLooper: per-key order, cross-key parallelism, fairness, memory, lifecycle."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from typing import Any

import pytest

from cronloop.sync.keyed import KeyedLooper, KeyedLooperStatistics
from cronloop.sync.looper import Handle, LooperClosed

THREAD_TIMEOUT = 10.0


async def test_each_key_runs_in_posting_order() -> None:
    seen: dict[str, list[int]] = defaultdict(list)
    async with KeyedLooper[str](workers=4) as looper:
        for i in range(300):
            key = "abc"[i % 3]
            looper.post(key, seen[key].append, i)
        async with asyncio.timeout(5):
            await looper.wait_idle()
    assert seen == {k: list(range(n, 300, 3)) for n, k in enumerate("abc")}


async def test_a_key_never_runs_concurrently_but_keys_run_in_parallel() -> None:
    active: dict[int, int] = defaultdict(int)
    overlap_per_key = 0
    running = 0
    max_running = 0
    order: dict[int, list[int]] = defaultdict(list)

    async def handler(key: int, i: int, yields: int) -> None:
        nonlocal overlap_per_key, running, max_running
        active[key] += 1
        running += 1
        overlap_per_key = max(overlap_per_key, active[key])
        max_running = max(max_running, running)
        for _ in range(yields):
            await asyncio.sleep(0)
        order[key].append(i)
        running -= 1
        active[key] -= 1

    async with KeyedLooper[int](workers=3) as looper:
        for i in range(200):
            looper.post(i % 7, handler, i % 7, i, (i * 7919) % 5)
        async with asyncio.timeout(5):
            await looper.wait_idle()
    assert overlap_per_key == 1
    assert max_running == 3  # parallel across keys, bounded by workers
    for key, items in order.items():
        assert items == sorted(items)
        assert len(items) == len(range(key, 200, 7))


async def test_workers_bound_the_handlers_running_at_once() -> None:
    gate = asyncio.Event()
    started = 0

    async def hold() -> None:
        nonlocal started
        started += 1
        await gate.wait()

    async with KeyedLooper[int](workers=2) as looper:
        for key in range(6):
            looper.post(key, hold)
        for _ in range(10):
            await asyncio.sleep(0)
        stats = looper.statistics()
        assert (stats.running, stats.workers, stats.ready_keys, stats.live_keys) == (2, 2, 4, 6)
        assert started == 2
        gate.set()
        async with asyncio.timeout(5):
            await looper.wait_idle()
    assert started == 6


async def test_an_idle_key_costs_no_memory() -> None:
    gate = asyncio.Event()
    async with KeyedLooper[str](workers=2) as looper:
        handles = [looper.post(f"job-{i}", int) for i in range(1000)]
        looper.post("held", gate.wait)
        assert looper.statistics().live_keys == 1001
        async with asyncio.timeout(5):
            for handle in handles:
                await handle
            assert looper.statistics().live_keys == 1  # only the key still running
            gate.set()
            await looper.wait_idle()
        stats = looper.statistics()
        assert (stats.live_keys, stats.ready_keys, stats.pending, stats.running) == (0, 0, 0, 0)
        assert looper._keys == {}  # the per-key state itself is gone, not just counted


async def test_a_hot_key_does_not_starve_a_new_key() -> None:
    batch_size = 8
    executions: list[str] = []
    cold_posted_at: list[int] = []

    async with KeyedLooper[str](workers=1, batch_size=batch_size) as looper:

        def hot(i: int) -> None:
            executions.append("hot")
            if i == 100:
                cold_posted_at.append(len(executions))
                looper.post("cold", executions.append, "cold")

        for i in range(10_000):
            looper.post("hot", hot, i)
        async with asyncio.timeout(30):
            await looper.wait_idle()
    cold_ran_at = executions.index("cold")
    assert len(executions) == 10_001
    # At most the rest of the hot key's current batch runs before the cold key's turn.
    assert cold_ran_at - cold_posted_at[0] <= batch_size


async def test_fairness_holds_with_several_workers_and_async_handlers() -> None:
    executions: list[str] = []

    async def hot() -> None:
        executions.append("hot")
        await asyncio.sleep(0)

    async with KeyedLooper[str](workers=2, batch_size=4) as looper:
        for key in ("hot-1", "hot-2", "hot-3"):
            for _ in range(1000):
                looper.post(key, hot)
        for _ in range(50):
            await asyncio.sleep(0)
        posted_at = len(executions)
        cold = looper.post("cold", executions.append, "cold")
        async with asyncio.timeout(30):
            await cold
            # Each worker finishes its batch and at most the keys ahead of "cold" go first.
            assert executions.index("cold") - posted_at <= 4 * 2 * 3
            await looper.wait_idle()


async def test_errors_are_isolated_per_handler(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[Exception] = []
    seen: list[str] = []

    def boom() -> None:
        raise RuntimeError("sub-job report broke")

    async with KeyedLooper[str](on_error=lambda h, e: errors.append(e)) as looper:
        with caplog.at_level(logging.ERROR, logger="cronloop.sync.looper"):
            failing = looper.post("job-1", boom)
            after = looper.post("job-1", seen.append, "next in same key")
            looper.post("job-2", seen.append, "other key")
            async with asyncio.timeout(5):
                with pytest.raises(RuntimeError, match="report broke"):
                    await failing
                await after
                await looper.wait_idle()
    assert sorted(seen) == ["next in same key", "other key"]
    assert [str(e) for e in errors] == ["sub-job report broke"]
    assert sum("boom" in r.getMessage() for r in caplog.records) == 1
    stats = looper.statistics()
    assert (stats.failed, stats.dispatched) == (1, 3)


async def test_cancel_and_remove_pending_handlers() -> None:
    gate = asyncio.Event()
    seen: list[int] = []
    async with KeyedLooper[str]() as looper:
        running = looper.post("k", gate.wait)
        first = looper.post("k", seen.append, 1)
        second = looper.post("k", seen.append, 2)
        third = looper.post("k", seen.append, 3)
        await asyncio.sleep(0)
        assert running.cancel() is False
        assert first.cancel() is True
        assert looper.remove(third) is True
        other: KeyedLooper[str] = KeyedLooper(name="other")
        with pytest.raises(ValueError, match="not posted to looper 'other'"):
            other.remove(second)
        gate.set()
        async with asyncio.timeout(5):
            await looper.wait_idle()
            with pytest.raises(asyncio.CancelledError):
                await first
    assert seen == [2]
    assert looper.statistics().cancelled == 2


async def test_quit_drops_queued_and_lets_running_handlers_finish() -> None:
    gate = asyncio.Event()
    seen: list[str] = []

    async def current(key: str) -> None:
        await gate.wait()
        seen.append(key)

    looper: KeyedLooper[str] = KeyedLooper(workers=2)
    looper.start()
    running = [looper.post("a", current, "a"), looper.post("b", current, "b")]
    dropped = [looper.post("a", seen.append, "a2"), looper.post("c", seen.append, "c")]
    await asyncio.sleep(0)
    looper.quit()
    looper.quit_safely()  # first call wins
    with pytest.raises(LooperClosed, match="is closed"):
        looper.post("d", int)
    gate.set()
    async with asyncio.timeout(5):
        await looper.wait_closed()
    assert sorted(seen) == ["a", "b"]
    assert all(h.done() and not h.cancelled() for h in running)
    assert all(h.cancelled() for h in dropped)
    assert looper.statistics() == KeyedLooperStatistics(
        live_keys=0,
        ready_keys=0,
        pending=0,
        running=0,
        workers=0,
        dispatched=2,
        failed=0,
        cancelled=2,
        slow_dispatches=0,
        closed=True,
    )


async def test_quit_safely_runs_everything_queued() -> None:
    seen: list[int] = []
    looper: KeyedLooper[int] = KeyedLooper(workers=2)
    looper.start()
    for i in range(100):
        looper.post(i % 5, seen.append, i)
    looper.quit_safely()
    async with asyncio.timeout(5):
        await looper.wait_closed()
    assert sorted(seen) == list(range(100))
    assert looper.statistics().live_keys == 0


async def test_context_manager_exit_by_exception_drops_queued() -> None:
    handles: list[Handle[int]] = []

    async def body() -> None:
        async with KeyedLooper[str]() as looper:
            handles.append(looper.post("k", int))
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await body()
    assert handles[0].cancelled()


async def test_wait_idle_waits_for_posts_made_so_far_only() -> None:
    later_gate = asyncio.Event()
    seen: list[str] = []
    async with KeyedLooper[str](workers=2) as looper:

        async def spawn_more() -> None:
            await asyncio.sleep(0)
            seen.append("first")
            looper.post("later", later_gate.wait)  # posted after wait_idle began

        looper.post("first", spawn_more)
        looper.post("second", seen.append, "second")
        async with asyncio.timeout(5):
            await looper.wait_idle()
            assert sorted(seen) == ["first", "second"]
            assert looper.statistics().live_keys == 1  # "later" still running
            later_gate.set()
            await looper.wait_idle()
        assert looper.statistics().live_keys == 0


async def test_wait_idle_includes_posts_from_threads() -> None:
    seen: list[int] = []
    async with KeyedLooper[str]() as looper:

        def poster() -> None:
            for i in range(200):
                looper.post("t", seen.append, i)

        async with asyncio.timeout(THREAD_TIMEOUT):
            await asyncio.to_thread(poster)
            await looper.wait_idle()
    assert seen == list(range(200))


async def test_threads_posting_to_shared_keys_keep_per_poster_order() -> None:
    seen: dict[str, list[tuple[int, int]]] = defaultdict(list)

    def poster(looper: KeyedLooper[str], tid: int) -> None:
        for i in range(300):
            key = f"job-{i % 4}"
            looper.post(key, seen[key].append, (tid, i))

    async with KeyedLooper[str](workers=4) as looper:
        threads = [threading.Thread(target=poster, args=(looper, t)) for t in range(3)]
        for thread in threads:
            thread.start()
        async with asyncio.timeout(THREAD_TIMEOUT):
            for thread in threads:
                await asyncio.to_thread(thread.join, THREAD_TIMEOUT)
            await looper.wait_idle()
    for key, items in seen.items():
        for tid in range(3):
            mine = [i for t, i in items if t == tid]
            assert mine == sorted(mine), key
            assert len(mine) == 75, key


async def test_results_reach_other_threads() -> None:
    async with KeyedLooper[str]() as looper:
        handle: Handle[int] = looper.post("k", int, "41")
        async with asyncio.timeout(THREAD_TIMEOUT):
            assert await asyncio.to_thread(handle.result, THREAD_TIMEOUT) == 41


@pytest.mark.looptime
async def test_slow_dispatch_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    async with KeyedLooper[str](slow_dispatch_threshold=1.0) as looper:
        with caplog.at_level(logging.WARNING, logger="cronloop.sync.looper"):
            looper.post("k", asyncio.sleep, 2)
            looper.post("k", asyncio.sleep, 0.5)
            async with asyncio.timeout(10):
                await looper.wait_idle()
    assert looper.statistics().slow_dispatches == 1
    assert sum("slow dispatch" in r.getMessage() for r in caplog.records) == 1


async def test_lifecycle_misuse_is_refused() -> None:
    looper: KeyedLooper[str] = KeyedLooper(name="idle")
    with pytest.raises(RuntimeError, match="looper 'idle' is not started"):
        looper.post("k", int)
    with pytest.raises(RuntimeError, match="not started"):
        await looper.wait_idle()
    looper.start()
    with pytest.raises(RuntimeError, match="is running: call quit"):
        await looper.wait_closed()
    looper.quit()
    await looper.wait_closed()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "workers must be an integer >= 1"),
        ({"workers": 1.5}, "workers must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"slow_dispatch_threshold": -2}, "slow_dispatch_threshold must be a positive"),
    ],
)
async def test_bad_options_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyedLooper(**kwargs)


async def test_external_cancellation_of_workers_cancels_pending_handles() -> None:
    gate = asyncio.Event()
    looper: KeyedLooper[str] = KeyedLooper(name="doomed", workers=1)
    looper.start()
    looper.post("a", gate.wait)
    queued = looper.post("b", int)
    await asyncio.sleep(0)
    workers = [t for t in asyncio.all_tasks() if t.get_name() == "doomed:worker"]
    assert len(workers) == 1
    workers[0].cancel()
    async with asyncio.timeout(5):
        await asyncio.wait(workers)
        await looper.wait_closed()
    assert workers[0].cancelled()
    assert queued.cancelled()
    assert looper.statistics().closed


async def test_slow_dispatches_are_all_counted_but_logged_sparingly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with KeyedLooper[str](slow_dispatch_threshold=1.0) as looper:
        with caplog.at_level(logging.WARNING, logger="cronloop.sync.looper"):
            for key in ("a", "b", "c"):
                looper.post(key, asyncio.sleep, 2)  # 2 s of (fake) loop time each
            async with asyncio.timeout(10):
                await looper.wait_idle()
    assert looper.statistics().slow_dispatches == 3
    # One line: the other two came within the 10 s (real time) between log lines.
    assert sum("slow dispatch" in r.getMessage() for r in caplog.records) == 1

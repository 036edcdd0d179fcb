"""Tests of the Looper: ordering, serialism, removal, threads, lifecycle, diagnostics, errors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import pytest

from cronloop.sync.looper import Handle, Looper, LooperClosed, LooperStatistics

THREAD_TIMEOUT = 10.0


class Poster(Protocol):
    """The protocol the Timer (another module) posts through: Looper must satisfy it."""

    def post(self, fn: Callable[..., object], /, *args: object) -> object: ...


async def test_looper_satisfies_the_timer_post_protocol() -> None:
    poster: Poster = Looper()  # checked by mypy; at runtime only the attribute exists
    assert callable(poster.post)


async def test_posts_run_in_order_and_results_are_awaitable() -> None:
    seen: list[int] = []
    async with Looper() as looper:
        handles = [looper.post(seen.append, i) for i in range(100)]
        last = looper.post(len, seen)
        async with asyncio.timeout(5):
            assert await last == 100
    assert seen == list(range(100))
    assert all(h.done() and not h.cancelled() for h in handles)


async def test_async_handlers_run_strictly_one_at_a_time() -> None:
    log: list[str] = []
    active = 0
    max_active = 0

    async def step(name: str, yields: int) -> str:
        nonlocal active, max_active
        active += 1
        max_active = max(max_active, active)
        log.append(f"start {name}")
        for _ in range(yields):
            await asyncio.sleep(0)
        log.append(f"end {name}")
        active -= 1
        return name

    def sync_step(name: str) -> int:
        log.append(f"sync {name}")
        return len(log)

    async with Looper() as looper:
        a = looper.post(step, "a", 5)
        b = looper.post(step, "b", 0)
        c = looper.post(sync_step, "c")
        async with asyncio.timeout(5):
            assert await a == "a"
            assert await b == "b"
            assert await c == 5
    assert max_active == 1
    assert log == ["start a", "end a", "start b", "end b", "sync c"]


async def test_context_is_created_by_the_factory_and_shared_by_handlers() -> None:
    class Counter:
        def __init__(self) -> None:
            self.value = 0

    async with Looper(context_factory=Counter) as looper:

        def bump() -> int:
            looper.context.value += 1
            return looper.context.value

        handles = [looper.post(bump) for _ in range(10)]
        async with asyncio.timeout(5):
            assert [await h for h in handles] == list(range(1, 11))
    default: Looper[dict[str, Any]] = Looper()
    assert default.context == {}


@pytest.mark.looptime
async def test_equal_deadlines_keep_posting_order() -> None:
    seen: list[int] = []
    async with Looper() as looper:
        when = looper.time() + 10
        for i in range(200):
            looper.post_at(when, seen.append, i)
        async with asyncio.timeout(20):
            await looper.post_at(when, seen.append, 200)
    assert seen == list(range(201))


@pytest.mark.looptime
async def test_handlers_run_in_deadline_order_not_posting_order() -> None:
    loop = asyncio.get_running_loop()
    seen: list[tuple[str, float]] = []

    def record(name: str) -> None:
        seen.append((name, loop.time()))

    async with Looper() as looper:
        start = looper.time()
        looper.post_delayed(3, record, "c")
        looper.post_delayed(1, record, "a")
        looper.post_at(start + 2, record, "b")
        looper.post(record, "now")
        async with asyncio.timeout(10):
            await looper.post_delayed(3, record, "d")
    assert [name for name, _ in seen] == ["now", "a", "b", "c", "d"]
    assert [round(t - start) for _, t in seen] == [0, 1, 2, 3, 3]


@pytest.mark.looptime
async def test_a_due_delayed_handler_goes_before_later_posts() -> None:
    seen: list[str] = []

    async def busy() -> None:
        await asyncio.sleep(5)  # fake time: the delayed handler becomes due meanwhile

    async with Looper() as looper:
        looper.post(busy)
        looper.post_delayed(1, seen.append, "delayed, due at 1")
        await asyncio.sleep(2)
        looper.post(seen.append, "posted at 2")
        async with asyncio.timeout(10):
            await looper.post(seen.append, "posted after")
    assert seen == ["delayed, due at 1", "posted at 2", "posted after"]


@pytest.mark.looptime
async def test_post_at_in_the_past_is_due_at_once() -> None:
    seen: list[str] = []
    async with Looper() as looper:
        await asyncio.sleep(10)
        handle = looper.post_at(looper.time() - 5, seen.append, "late")
        async with asyncio.timeout(1):
            await handle
    assert seen == ["late"]


async def test_cancel_removes_pending_handlers_only() -> None:
    seen: list[int] = []
    release = asyncio.Event()

    async def blocker() -> str:
        await release.wait()
        return "finished"

    async with Looper() as looper:
        running = looper.post(blocker)
        pending = looper.post(seen.append, 1)
        kept = looper.post(seen.append, 2)
        await asyncio.sleep(0)  # the consumer starts the blocker
        assert running.running()
        assert running.cancel() is False  # a running handler is never affected
        assert pending.cancel() is True
        assert pending.cancel() is False  # idempotent
        assert looper.remove(kept) is True
        assert looper.statistics().cancelled == 2
        release.set()
        async with asyncio.timeout(5):
            assert await running == "finished"
            with pytest.raises(asyncio.CancelledError):
                await pending
    assert seen == []
    assert pending.cancelled()
    assert pending.done()
    assert not running.cancelled()
    assert running.cancel() is False  # already finished


async def test_remove_rejects_a_handle_of_another_looper() -> None:
    async with Looper(name="a") as a, Looper(name="b") as b:
        handle = a.post(int)
        with pytest.raises(ValueError, match="not posted to looper 'b'"):
            b.remove(handle)


@pytest.mark.looptime
async def test_cancelling_many_delayed_handlers_keeps_the_looper_correct() -> None:
    seen: list[int] = []
    async with Looper() as looper:
        handles = [looper.post_delayed(1 + i / 1000, seen.append, i) for i in range(500)]
        for handle in handles[:-1]:
            assert handle.cancel()
        assert looper.statistics().pending == 1
        async with asyncio.timeout(10):
            await handles[-1]
    assert seen == [499]


async def test_a_failing_handler_is_logged_counted_and_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors: list[tuple[Handle[Any], Exception]] = []

    def boom() -> None:
        raise KeyError("bad key")

    async with Looper(name="errs", on_error=lambda h, e: errors.append((h, e))) as looper:
        with caplog.at_level(logging.ERROR, logger="cronloop.sync.looper"):
            failing = looper.post(boom)
            after = looper.post(str, 42)
            async with asyncio.timeout(5):
                with pytest.raises(KeyError, match="bad key"):
                    await failing
                assert await after == "42"
    records = [r for r in caplog.records if "boom" in r.getMessage()]
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert errors == [(failing, errors[0][1])]
    assert isinstance(errors[0][1], KeyError)
    stats = looper.statistics()
    assert (stats.failed, stats.dispatched) == (1, 2)


async def test_a_failing_on_error_callback_does_not_stop_the_looper(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_callback(handle: Handle[Any], exc: Exception) -> None:
        raise RuntimeError("callback broke")

    def boom() -> None:
        raise ValueError("handler broke")

    async with Looper(on_error=broken_callback) as looper:
        with caplog.at_level(logging.ERROR, logger="cronloop.sync.looper"):
            looper.post(boom)
            async with asyncio.timeout(5):
                assert await looper.post(int, "7") == 7
    assert any("on_error callback" in r.getMessage() for r in caplog.records)


async def test_a_handler_raising_cancelled_error_only_cancels_itself() -> None:
    def gives_up() -> None:
        raise asyncio.CancelledError

    async with Looper() as looper:
        handle = looper.post(gives_up)
        async with asyncio.timeout(5):
            assert await looper.post(int, "3") == 3
    assert handle.cancelled()


async def test_posts_from_threads_keep_per_poster_order() -> None:
    seen: list[tuple[int, int]] = []
    per_thread = 500

    def poster(looper: Looper[dict[str, Any]], tid: int) -> None:
        for i in range(per_thread):
            looper.post(seen.append, (tid, i))

    async with Looper() as looper:
        threads = [threading.Thread(target=poster, args=(looper, t)) for t in range(4)]
        for thread in threads:
            thread.start()
        async with asyncio.timeout(THREAD_TIMEOUT):
            for thread in threads:
                await asyncio.to_thread(thread.join, THREAD_TIMEOUT)
        assert not any(thread.is_alive() for thread in threads)
    assert len(seen) == 4 * per_thread
    for tid in range(4):
        assert [i for t, i in seen if t == tid] == list(range(per_thread))


async def test_other_threads_wait_for_results_with_a_bound() -> None:
    release = asyncio.Event()

    async def slow() -> int:
        await release.wait()
        return 7

    async with Looper() as looper:
        handle = looper.post(slow)
        failing = looper.post(int, "not a number")
        with pytest.raises(RuntimeError, match="would deadlock"):
            handle.result(1)
        async with asyncio.timeout(THREAD_TIMEOUT):
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(handle.result, 0.01)
            future = handle.concurrent_future()
            release.set()
            assert await asyncio.to_thread(handle.result, THREAD_TIMEOUT) == 7
            assert future.result(timeout=0) == 7
            with pytest.raises(ValueError, match="invalid literal"):
                await asyncio.to_thread(failing.result, THREAD_TIMEOUT)
        with pytest.raises(ValueError, match="timeout must be"):
            handle.result(-1)


async def test_threads_can_post_delayed_and_cancel() -> None:
    seen: list[str] = []
    gate = asyncio.Event()

    async with Looper() as looper:
        looper.post(gate.wait)  # hold the consumer so the thread's posts stay pending

        def from_thread() -> tuple[bool, bool]:
            doomed = looper.post(seen.append, "doomed")
            looper.post_delayed(0, seen.append, "delayed")
            looper.post_at(looper.time(), seen.append, "at")
            return doomed.cancel(), doomed.cancelled()

        async with asyncio.timeout(THREAD_TIMEOUT):
            assert await asyncio.to_thread(from_thread) == (True, True)
            gate.set()
            await looper.post(seen.append, "last")
    assert seen == ["delayed", "at", "last"]


async def test_a_cancelled_handle_resolves_thread_futures_as_cancelled() -> None:
    gate = asyncio.Event()
    async with Looper() as looper:
        looper.post(gate.wait)
        handle = looper.post(int)
        future = handle.concurrent_future()
        assert handle.cancel()
        gate.set()
        assert future.cancelled()

        def wait_in_thread() -> str:
            try:
                handle.result(THREAD_TIMEOUT)
            except concurrent.futures.CancelledError:
                return "cancelled"
            return "returned"

        async with asyncio.timeout(THREAD_TIMEOUT):
            assert await asyncio.to_thread(wait_in_thread) == "cancelled"


async def test_awaiting_from_another_thread_is_refused() -> None:
    gate = asyncio.Event()
    async with Looper() as looper:
        looper.post(gate.wait)
        handle = looper.post(int)

        def await_elsewhere() -> None:
            async def inner() -> None:
                await handle

            asyncio.run(inner())

        with pytest.raises(RuntimeError, match="only on its event loop thread"):
            await asyncio.to_thread(await_elsewhere)
        gate.set()


async def test_quit_drops_pending_and_lets_the_current_handler_finish() -> None:
    seen: list[str] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def current() -> str:
        started.set()
        await release.wait()
        seen.append("current")
        return "done"

    looper = Looper()
    looper.start()
    running = looper.post(current)
    dropped = [looper.post(seen.append, "dropped"), looper.post_delayed(1, seen.append, "late")]
    async with asyncio.timeout(5):
        await started.wait()
        looper.quit()
        looper.quit_safely()  # first call wins: no effect
        with pytest.raises(LooperClosed, match="looper 'looper' is closed"):
            looper.post(int)
        release.set()
        await looper.wait_closed()
    assert await running == "done"
    assert all(h.cancelled() for h in dropped)
    assert seen == ["current"]
    stats = looper.statistics()
    assert stats == LooperStatistics(
        pending=0,
        running=0,
        dispatched=1,
        failed=0,
        cancelled=2,
        slow_dispatches=0,
        slow_deliveries=0,
        closed=True,
    )


@pytest.mark.looptime
async def test_quit_safely_runs_due_handlers_and_drops_future_ones() -> None:
    seen: list[str] = []
    looper = Looper()
    looper.start()
    looper.post(seen.append, "now")
    looper.post_delayed(0, seen.append, "due")
    future = looper.post_delayed(60, seen.append, "future")
    looper.quit_safely()
    looper.quit()  # first call wins: still "safely"
    async with asyncio.timeout(5):
        await looper.wait_closed()
    assert seen == ["now", "due"]
    assert future.cancelled()
    with pytest.raises(LooperClosed):
        looper.post_delayed(1, int)


async def test_quit_from_another_thread() -> None:
    looper = Looper()
    looper.start()
    gate = asyncio.Event()
    looper.post(gate.wait)
    queued = looper.post(int)
    async with asyncio.timeout(THREAD_TIMEOUT):
        await asyncio.to_thread(looper.quit)
        gate.set()
        await looper.wait_closed()
    assert queued.cancelled()


async def test_context_manager_exit_by_exception_drops_pending() -> None:
    seen: list[str] = []
    handles: list[Handle[None]] = []

    async def body() -> None:
        async with Looper() as looper:
            handles.append(looper.post(seen.append, "never"))
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await body()
    assert handles[0].cancelled()
    assert seen == []


async def test_cancelling_wait_closed_does_not_stop_the_looper() -> None:
    looper = Looper()
    looper.start()
    release = asyncio.Event()
    running = looper.post(release.wait)
    looper.quit_safely()
    waiter = asyncio.create_task(looper.wait_closed())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    async with asyncio.timeout(5):
        await looper.wait_closed()
        assert await running is True


@pytest.mark.looptime
async def test_slow_dispatch_and_slow_delivery_are_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Looper(
        name="slow", slow_dispatch_threshold=1.0, slow_delivery_threshold=0.5
    ) as looper:
        with caplog.at_level(logging.INFO, logger="cronloop.sync.looper"):
            looper.post(asyncio.sleep, 5)  # 5 s of (fake) loop time: slow dispatch
            late = [looper.post_delayed(1, int) for _ in range(3)]  # due at 1, start at 5
            async with asyncio.timeout(30):
                for handle in late:
                    await handle
                await asyncio.sleep(1)
                await looper.post(int)  # on time: the backlog is drained
    stats = looper.statistics()
    assert stats.slow_dispatches == 1
    assert stats.slow_deliveries == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("slow dispatch on looper 'slow'" in m for m in messages) == 1
    assert sum("slow delivery on looper 'slow'" in m for m in messages) == 1  # suppressed
    assert sum("drained" in m for m in messages) == 1


async def test_statistics_report_pending_and_running() -> None:
    gate = asyncio.Event()
    observed: list[LooperStatistics] = []
    async with Looper() as looper:

        async def watch() -> None:
            observed.append(looper.statistics())
            await gate.wait()

        looper.post(watch)
        looper.post(int)
        looper.post_delayed(100, int).cancel()
        await asyncio.sleep(0)
        assert looper.statistics().pending == 1
        gate.set()
    inside = observed[0]
    assert (inside.running, inside.pending, inside.closed) == (1, 1, False)
    assert looper.statistics().dispatched == 2


async def test_posting_before_start_is_refused() -> None:
    looper = Looper(name="idle")
    with pytest.raises(RuntimeError, match="looper 'idle' is not started"):
        looper.post(int)
    with pytest.raises(RuntimeError, match="not started"):
        looper.post_delayed(1, int)
    with pytest.raises(RuntimeError, match="not started"):
        await looper.wait_closed()
    assert looper.statistics().pending == 0
    looper.start()
    with pytest.raises(RuntimeError, match="already started"):
        looper.start()
    looper.quit()
    await looper.wait_closed()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name must be a non-empty string"),
        ({"slow_dispatch_threshold": 0}, "slow_dispatch_threshold must be a positive"),
        ({"slow_delivery_threshold": -1.0}, "slow_delivery_threshold must be a positive"),
    ],
)
async def test_bad_options_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Looper(**kwargs)


async def test_bad_deadlines_are_rejected() -> None:
    async with Looper() as looper:
        with pytest.raises(ValueError, match="delay must be a finite number"):
            looper.post_delayed(-1, int)
        with pytest.raises(ValueError, match="delay must be a finite number"):
            looper.post_delayed(float("nan"), int)
        with pytest.raises(ValueError, match="when must be a finite loop time"):
            looper.post_at(float("inf"), int)


async def test_external_cancellation_of_the_consumer_cancels_pending_handles() -> None:
    gate = asyncio.Event()
    looper = Looper(name="doomed")
    looper.start()
    looper.post(gate.wait)
    queued = looper.post(int)
    await asyncio.sleep(0)
    consumer = next(t for t in asyncio.all_tasks() if t.get_name() == "looper:doomed")
    consumer.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await looper.wait_closed()
    assert queued.cancelled()
    assert looper.statistics().closed
    with pytest.raises(LooperClosed):
        looper.post(int)


async def test_cancel_from_threads_is_definitive_while_the_consumer_runs() -> None:
    ran: list[int] = []
    count = 3000
    async with Looper() as looper:
        handles = [looper.post(ran.append, i) for i in range(count)]

        def cancel_some(order: list[int]) -> list[int]:
            return [i for i in order if handles[i].cancel()]

        async with asyncio.timeout(THREAD_TIMEOUT):
            evens, everything = await asyncio.gather(
                asyncio.to_thread(cancel_some, list(range(0, count, 2))),
                asyncio.to_thread(cancel_some, list(range(count - 1, -1, -1))),
            )
            await looper.post(int)
    cancelled = evens + everything
    assert len(cancelled) == len(set(cancelled))  # at most one canceller wins per handle
    assert set(cancelled).isdisjoint(ran)  # a cancel that returned True never ran
    assert sorted(cancelled + ran) == list(range(count))
    assert all(handles[i].cancelled() for i in cancelled)
    assert ran == sorted(ran)


async def test_awaiters_wake_when_another_thread_cancels() -> None:
    gate = asyncio.Event()
    async with Looper() as looper:
        looper.post(gate.wait)
        handles = [looper.post(int) for _ in range(200)]

        async def outcome(handle: Handle[int]) -> str:
            try:
                await handle
            except asyncio.CancelledError:
                return "cancelled"
            return "ran"

        waiters = [asyncio.create_task(outcome(h)) for h in handles]
        await asyncio.sleep(0)  # every waiter is registered on its handle
        async with asyncio.timeout(THREAD_TIMEOUT):
            cancelled = await asyncio.to_thread(lambda: [h.cancel() for h in handles[::2]])
            gate.set()
            results = await asyncio.gather(*waiters)
    assert all(cancelled)
    assert results == ["cancelled", "ran"] * 100

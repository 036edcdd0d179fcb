from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from cronloop.sync.metrics import PrometheusMetricsProvider
from cronloop.sync.ratelimit import ItemExponentialFailureRateLimiter
from cronloop.sync.reconciler import (
    BatchReconciler,
    Controller,
    Reconciler,
    Result,
    TerminalError,
)


def backoff(base: float = 1.0, cap: float = 1000.0) -> ItemExponentialFailureRateLimiter:
    return ItemExponentialFailureRateLimiter(base, cap)


class Script:
    """A reconciler that records when each key ran and follows a per-key script of outcomes.

    An outcome is a ``Result``, ``None`` or an exception to raise; the last one repeats.
    """

    def __init__(self, **scripts: list[Result | Exception | None]) -> None:
        self.scripts = scripts
        self.calls: list[tuple[str, float]] = []
        self.ran = asyncio.Event()

    async def reconcile(self, key: str) -> Result | None:
        loop = asyncio.get_running_loop()
        self.calls.append((key, loop.time()))
        self.ran.set()
        script = self.scripts.get(key, [None])
        outcome = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def times(self, key: str) -> list[float]:
        return [t for k, t in self.calls if k == key]


async def run_until_calls(
    controller: Controller[str], script: Script, calls: int, limit: float
) -> None:
    """Run ``controller`` until ``script`` has seen ``calls`` reconciles, then stop it."""
    async with asyncio.timeout(limit), asyncio.TaskGroup() as tg:
        runner = tg.create_task(controller.run())
        while len(script.calls) < calls:
            script.ran.clear()
            await script.ran.wait()
        controller.stop()
        await runner


async def run_until(controller: Controller[str], condition: asyncio.Event, limit: float) -> None:
    """Run ``controller`` until ``condition`` is set, then stop it and wait for ``run``."""
    async with asyncio.timeout(limit), asyncio.TaskGroup() as tg:
        runner = tg.create_task(controller.run())
        await condition.wait()
        controller.stop()
        await runner


@pytest.mark.looptime
async def test_success_forgets_the_key() -> None:
    script = Script()
    controller = Controller[str](script, rate_limiter=backoff())
    controller.queue.rate_limiter.when("a")  # pretend an earlier failure
    controller.enqueue("a")
    await run_until(controller, script.ran, 10)
    assert controller.queue.num_requeues("a") == 0
    stats = controller.statistics()
    assert (stats.succeeded, stats.errors, stats.queue.processing) == (1, 0, 0)


@pytest.mark.looptime
async def test_errors_back_off_exactly_then_succeed() -> None:
    boom = RuntimeError("boom")
    script = Script(a=[boom, boom, boom, Result()])
    controller = Controller[str](script, rate_limiter=backoff(1.0))
    done = asyncio.Event()
    controller.enqueue("a")
    async with asyncio.timeout(100), asyncio.TaskGroup() as tg:
        runner = tg.create_task(controller.run())
        while len(script.calls) < 4:
            script.ran.clear()
            await script.ran.wait()
        done.set()
        controller.stop()
        await runner
    start = script.times("a")[0]
    assert [t - start for t in script.times("a")] == [0.0, 1.0, 3.0, 7.0]
    assert controller.queue.num_requeues("a") == 0, "the final success forgets"
    assert controller.statistics().errors == 3


@pytest.mark.looptime
async def test_requeue_after_resets_backoff_and_waits() -> None:
    script = Script(a=[RuntimeError("x"), RuntimeError("x"), Result(requeue_after=30.0)])
    controller = Controller[str](script, rate_limiter=backoff(1.0))
    controller.enqueue("a")
    async with asyncio.timeout(200), asyncio.TaskGroup() as tg:
        runner = tg.create_task(controller.run())
        while len(script.calls) < 5:
            script.ran.clear()
            await script.ran.wait()
        assert controller.queue.num_requeues("a") == 0
        controller.stop()
        await runner
    start = script.times("a")[0]
    assert [t - start for t in script.times("a")] == [0.0, 1.0, 3.0, 33.0, 63.0]
    assert controller.statistics().requeued_after >= 2


@pytest.mark.looptime
async def test_requeue_after_zero_requeues_at_once() -> None:
    script = Script(a=[Result(requeue_after=0), None])
    controller = Controller[str](script)
    controller.enqueue("a")
    await run_until_calls(controller, script, 2, 10)
    assert script.times("a") == [script.times("a")[0]] * 2


@pytest.mark.looptime
async def test_terminal_error_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    script = Script(a=[TerminalError("bad spec")])
    controller = Controller[str](script, name="cron", rate_limiter=backoff())
    controller.queue.rate_limiter.when("a")
    controller.enqueue("a")
    with caplog.at_level(logging.ERROR, logger="cronloop.sync.reconciler"):
        async with asyncio.timeout(100), asyncio.TaskGroup() as tg:
            runner = tg.create_task(controller.run())
            await script.ran.wait()
            await asyncio.sleep(50)  # fake time: long enough for any retry
            controller.stop()
            await runner
    assert len(script.calls) == 1
    stats = controller.statistics()
    assert (stats.errors, stats.terminal_errors) == (1, 1)
    assert controller.queue.num_requeues("a") == 0, "a terminal failure forgets the backoff"
    assert [r.getMessage() for r in caplog.records] == [
        "cron: reconcile of 'a' failed terminally, not retrying"
    ]


@pytest.mark.looptime
async def test_exceptions_do_not_kill_the_worker(caplog: pytest.LogCaptureFixture) -> None:
    script = Script(a=[ValueError("broken"), None])
    controller = Controller[str](script, rate_limiter=backoff(10.0))
    controller.enqueue("a")
    controller.enqueue("b")
    with caplog.at_level(logging.ERROR, logger="cronloop.sync.reconciler"):
        await run_until_calls(controller, script, 3, 100)
    assert [k for k, _ in script.calls] == ["a", "b", "a"]
    assert len(caplog.records) == 1, "each failure is logged once"
    record = caplog.records[0]
    assert record.getMessage() == "controller: reconcile of 'a' failed, retry 1"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)


@pytest.mark.looptime
async def test_no_concurrent_reconcile_of_one_key() -> None:
    rng = random.Random(1234)
    in_flight: set[str] = set()
    violations: list[str] = []
    runs: dict[str, int] = {}
    all_ran_enough = asyncio.Event()
    controller: Controller[str]

    async def reconcile(key: str) -> Result | None:
        if key in in_flight:
            violations.append(key)
        in_flight.add(key)
        runs[key] = runs.get(key, 0) + 1
        try:
            # Re-add the key (and others) while it is being reconciled.
            controller.enqueue(key)
            controller.enqueue(rng.choice("abcd"))
            await asyncio.sleep(rng.random())
        finally:
            in_flight.discard(key)
        if len(runs) == 4 and min(runs.values()) >= 20:
            all_ran_enough.set()
        if runs[key] >= 20:
            return Result(requeue_after=10_000)
        return None

    controller = Controller[str](reconcile, workers=8)
    for key in "abcd":
        controller.enqueue(key)
    async with asyncio.timeout(5000), asyncio.TaskGroup() as tg:
        runner = tg.create_task(controller.run())
        await all_ran_enough.wait()
        controller.stop()
        await runner
    assert violations == []
    assert all(n >= 20 for n in runs.values())


@pytest.mark.looptime
async def test_key_readded_during_reconcile_runs_again_after() -> None:
    order: list[str] = []
    ran_twice = asyncio.Event()
    controller: Controller[str]

    async def reconcile(key: str) -> None:
        order.append(f"start {key}")
        if order.count("start a") == 1:
            controller.enqueue("a")
        await asyncio.sleep(1)
        order.append(f"end {key}")
        if order.count("end a") == 2:
            ran_twice.set()

    controller = Controller[str](reconcile, workers=4)
    controller.enqueue("a")
    async with asyncio.timeout(100), asyncio.TaskGroup() as tg:
        runner = tg.create_task(controller.run())
        await ran_twice.wait()
        controller.stop()
        await runner
    assert order == ["start a", "end a", "start a", "end a"]


@pytest.mark.looptime
async def test_reconcile_timeout_counts_and_retries() -> None:
    loop = asyncio.get_running_loop()
    attempts: list[float] = []
    retried = asyncio.Event()

    async def reconcile(key: str) -> None:
        attempts.append(loop.time())
        if len(attempts) == 2:
            retried.set()
        if len(attempts) == 1:
            await asyncio.sleep(3600)

    controller = Controller[str](reconcile, reconcile_timeout=5.0, rate_limiter=backoff(2.0))
    controller.enqueue("a")
    async with asyncio.timeout(100), asyncio.TaskGroup() as tg:
        runner = tg.create_task(controller.run())
        await retried.wait()
        controller.stop()
        await runner
    assert attempts[1] - attempts[0] == 7.0, "5 s timeout, then a 2 s backoff"
    stats = controller.statistics()
    assert (stats.timeouts, stats.errors, stats.succeeded) == (1, 1, 1)


@pytest.mark.looptime
async def test_timeout_error_from_the_reconciler_is_not_a_timeout() -> None:
    script = Script(a=[TimeoutError("upstream"), None])
    controller = Controller[str](script, reconcile_timeout=60.0, rate_limiter=backoff())
    controller.enqueue("a")
    await run_until_calls(controller, script, 2, 100)
    stats = controller.statistics()
    assert (stats.errors, stats.timeouts) == (1, 0)


@pytest.mark.looptime
async def test_stop_with_drain_reconciles_queued_keys() -> None:
    script = Script()
    controller = Controller[str](script)
    for key in "abc":
        controller.enqueue(key)
    controller.queue.add_after("later", 5.0)
    controller.stop(drain=True)
    async with asyncio.timeout(10):
        await controller.run()
    assert [k for k, _ in script.calls] == ["a", "b", "c"]
    assert controller.statistics().queue.delayed == 0


@pytest.mark.looptime
async def test_stop_without_drain_leaves_queued_keys() -> None:
    release = asyncio.Event()
    seen: list[str] = []
    both_busy = asyncio.Event()

    async def reconcile(key: str) -> None:
        seen.append(key)
        if len(seen) == 2:
            both_busy.set()
        await release.wait()

    controller = Controller[str](reconcile, workers=2)
    for key in "abcd":
        controller.enqueue(key)
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        runner = tg.create_task(controller.run())
        await both_busy.wait()
        controller.stop(drain=False)
        release.set()
        await runner
    assert seen == ["a", "b"], "in-flight reconciles finish, queued ones are left"
    assert controller.statistics().queue.queued == 2


async def test_stop_without_drain_wins_over_a_pending_wakeup() -> None:
    script = Script()
    controller = Controller[str](script)
    runner = asyncio.create_task(controller.run())
    for _ in range(3):
        await asyncio.sleep(0)  # run() starts its worker, which blocks in get()
    assert controller.statistics().queue.waiting_getters == 1
    controller.enqueue("a")  # wakes it ...
    controller.stop(drain=False)  # ... but the stop comes before it runs
    async with asyncio.timeout(10):
        await runner
    assert script.calls == []
    assert controller.statistics().queue.processing == 0


@pytest.mark.looptime
async def test_cancelling_run_cancels_reconciles_and_marks_keys_done() -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def reconcile(key: str) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    controller = Controller[str](reconcile)
    controller.enqueue("a")
    runner = asyncio.create_task(controller.run())
    async with asyncio.timeout(10):
        await started.wait()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    assert cancelled.is_set()
    stats = controller.statistics().queue
    assert (stats.processing, stats.shutting_down) == (0, True)


async def test_run_only_once() -> None:
    controller = Controller[str](Script())
    controller.stop()
    async with asyncio.timeout(10):
        await controller.run()
    with pytest.raises(RuntimeError, match="already run"):
        await controller.run()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"workers": 0}, "workers"),
        ({"reconcile_timeout": 0}, "reconcile_timeout"),
        ({"reconcile_timeout": -1.0}, "reconcile_timeout"),
    ],
)
def test_bad_controller_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Controller[str](Script(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_bad_requeue_after(value: float) -> None:
    with pytest.raises(ValueError, match="requeue_after"):
        Result(requeue_after=value)


@pytest.mark.looptime
async def test_controller_metrics() -> None:
    registry = CollectorRegistry()
    script = Script(a=[RuntimeError("x"), TerminalError("y")], b=[Result(requeue_after=100)])
    controller = Controller[str](
        script,
        name="cron",
        workers=3,
        rate_limiter=backoff(1.0),
        metrics=PrometheusMetricsProvider(registry=registry),
    )
    controller.enqueue("a")
    controller.enqueue("b")
    controller.enqueue("c")
    await run_until_calls(controller, script, 4, 50)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"controller": "cron", **labels})

    assert value("controller_runtime_reconcile_total", result="success") == 1
    assert value("controller_runtime_reconcile_total", result="error") == 2
    assert value("controller_runtime_reconcile_total", result="requeue_after") == 1
    assert value("controller_runtime_reconcile_errors_total") == 2
    assert value("controller_runtime_terminal_reconcile_errors_total") == 1
    assert value("controller_runtime_reconcile_time_seconds_count") == 4
    assert value("controller_runtime_max_concurrent_reconciles") == 3
    assert value("controller_runtime_active_workers") == 0
    assert registry.get_sample_value("workqueue_adds_total", {"name": "cron"}) == 4


def test_script_is_a_reconciler() -> None:
    assert isinstance(Script(), Reconciler)


# ---- batches ---------------------------------------------------------------------------------


class BatchScript(Script):
    """A :class:`Script` that also reconciles batches, recording each batch's keys."""

    def __init__(self, **scripts: list[Result | Exception | None]) -> None:
        super().__init__(**scripts)
        self.batches: list[list[str]] = []
        self.in_flight: set[str] = set()

    async def reconcile_batch(self, keys: Sequence[str]) -> list[Result | Exception | None]:
        assert not self.in_flight & set(keys), "a key of this batch is already being reconciled"
        self.in_flight |= set(keys)
        self.batches.append(list(keys))
        outcomes: list[Result | Exception | None] = []
        await asyncio.sleep(0.5)  # a store commit, on the fake clock
        for key in keys:
            try:
                outcomes.append(await self.reconcile(key))
            except Exception as exc:
                outcomes.append(exc)
        self.in_flight -= set(keys)
        return outcomes


@pytest.mark.looptime
async def test_ready_keys_are_reconciled_in_batches_of_at_most_max_batch() -> None:
    script = BatchScript()
    controller = Controller[str](script, workers=2, max_batch=4)
    for key in "abcdefghij":
        controller.enqueue(key)
    await run_until_calls(controller, script, 10, 10)
    assert sorted(len(b) for b in script.batches) == [2, 4, 4]
    assert sorted(k for b in script.batches for k in b) == list("abcdefghij")
    assert controller.statistics().succeeded == 10


@pytest.mark.looptime
async def test_each_key_of_a_batch_gets_its_own_outcome() -> None:
    script = BatchScript(
        a=[RuntimeError("only a"), None], b=[Result(requeue_after=30.0), None], c=[None]
    )
    controller = Controller[str](script, max_batch=8, rate_limiter=backoff(1.0))
    for key in "abc":
        controller.enqueue(key)
    await run_until_calls(controller, script, 5, 100)
    assert script.batches[0] == ["a", "b", "c"]
    start = script.times("c")[0]
    assert [t - start for t in script.times("a")] == [0.0, 1.5]  # its own backoff of 1 s
    assert [t - start for t in script.times("b")] == [0.0, 30.5]  # its own requeue
    assert script.batches[1:] == [["a"], ["b"]]
    assert script.times("c") == [start]
    stats = controller.statistics()
    assert (stats.errors, stats.requeued_after) == (1, 1)


@pytest.mark.looptime
async def test_a_key_added_during_its_batch_runs_again_after_it() -> None:
    script = BatchScript()
    controller = Controller[str](script, workers=4, max_batch=8)
    controller.enqueue("a")
    controller.enqueue("b")
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        runner = tg.create_task(controller.run())
        await asyncio.sleep(0.1)  # the first batch is in flight
        controller.enqueue("a")  # dirty while processing: not handed to another worker
        while len(script.calls) < 3:
            script.ran.clear()
            await script.ran.wait()
        controller.stop()
        await runner
    assert script.batches == [["a", "b"], ["a"]]


@pytest.mark.looptime
async def test_a_batch_that_raises_retries_every_key() -> None:
    class Failing(BatchScript):
        async def reconcile_batch(self, keys: Sequence[str]) -> list[Result | Exception | None]:
            self.batches.append(list(keys))
            self.ran.set()
            raise RuntimeError("store down")

    script = Failing()
    controller = Controller[str](script, max_batch=8, rate_limiter=backoff(1.0))
    controller.enqueue("a")
    controller.enqueue("b")
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        runner = tg.create_task(controller.run())
        while len(script.batches) < 2:
            script.ran.clear()
            await script.ran.wait()
        controller.stop()
        await runner
    assert script.batches == [["a", "b"], ["a", "b"]]
    assert controller.queue.num_requeues("a") == controller.queue.num_requeues("b") == 2
    assert controller.statistics().errors == 4  # counted per key


def test_max_batch_needs_a_batch_reconciler() -> None:
    with pytest.raises(ValueError, match="reconcile_batch"):
        Controller[str](Script(), max_batch=2)
    with pytest.raises(ValueError, match="max_batch"):
        Controller[str](BatchScript(), max_batch=0)
    assert isinstance(BatchScript(), BatchReconciler)

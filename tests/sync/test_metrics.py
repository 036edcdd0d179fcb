from __future__ import annotations

import asyncio
import gc

import pytest
from prometheus_client import CollectorRegistry

from cronloop.sync.metrics import (
    QUEUE_DURATION_BUCKETS,
    RECONCILE_RESULTS,
    ControllerMetrics,
    NoopMetricsProvider,
    PrometheusMetricsProvider,
    QueueMetrics,
    UnfinishedWorkSource,
)
from cronloop.sync.workqueue import DelayingQueue, RateLimitingQueue, WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Value:
    """A fake counter / gauge / histogram."""

    def __init__(self) -> None:
        self.value = 0.0
        self.observed: list[float] = []

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value

    def observe(self, amount: float) -> None:
        self.observed.append(amount)


class FakeProvider:
    def __init__(self) -> None:
        self.depth, self.adds, self.retries = Value(), Value(), Value()
        self.latency, self.work = Value(), Value()
        self.source: UnfinishedWorkSource | None = None
        self.names: list[str] = []

    def new_queue_metrics(self, name: str, source: UnfinishedWorkSource) -> QueueMetrics | None:
        self.names.append(name)
        self.source = source
        return QueueMetrics(
            depth=self.depth,
            adds=self.adds,
            queue_duration=self.latency,
            work_duration=self.work,
            retries=self.retries,
        )

    def new_controller_metrics(self, name: str) -> ControllerMetrics | None:
        return None


async def test_unnamed_queue_reports_nothing() -> None:
    provider = FakeProvider()
    queue = WorkQueue[str](metrics=provider)
    queue.add("a")
    assert provider.names == []
    assert provider.adds.value == 0


async def test_noop_provider_returns_none() -> None:
    noop = NoopMetricsProvider()
    queue = WorkQueue[str](name="q", metrics=noop)
    assert noop.new_queue_metrics("q", queue._ages) is None
    assert noop.new_controller_metrics("c") is None


async def test_depth_and_adds_count_effective_adds_only() -> None:
    provider = FakeProvider()
    queue = WorkQueue[str](name="q", metrics=provider)
    queue.add("a")
    queue.add("a")  # collapsed: not counted
    queue.add("b")
    assert (provider.adds.value, provider.depth.value) == (2, 2)
    key = queue.get_nowait()
    assert provider.depth.value == 1
    queue.add(key)  # re-add while processing counts, as in client-go
    assert (provider.adds.value, provider.depth.value) == (3, 2)
    queue.done(key)
    assert provider.depth.value == 2, "done re-queues without a second add"
    queue.get_nowait()
    queue.get_nowait()
    assert provider.depth.value == 0


async def test_durations_use_the_injected_clock() -> None:
    clock = Clock()
    provider = FakeProvider()
    queue = WorkQueue[str](name="q", metrics=provider, clock=clock)
    queue.add("a")
    clock.now += 2.0
    queue.add("a")  # the first add time counts
    clock.now += 1.0
    key = queue.get_nowait()
    assert provider.latency.observed == [3.0]
    clock.now += 4.0
    queue.done(key)
    assert provider.work.observed == [4.0]


async def test_unfinished_work_is_computed_on_demand() -> None:
    clock = Clock()
    provider = FakeProvider()
    queue = WorkQueue[str](name="q", metrics=provider, clock=clock)
    source = provider.source
    assert source is not None
    assert source.unfinished_work_seconds() == 0.0
    assert source.longest_running_processor_seconds() == 0.0
    queue.add("a")
    queue.add("b")
    queue.get_nowait()
    clock.now += 10.0
    queue.get_nowait()
    clock.now += 5.0
    assert source.unfinished_work_seconds() == 15.0 + 5.0
    assert source.longest_running_processor_seconds() == 15.0
    queue.done("a")
    assert source.longest_running_processor_seconds() == 5.0


@pytest.mark.looptime
async def test_retries_count_every_add_after() -> None:
    provider = FakeProvider()
    queue = RateLimitingQueue[str](name="q", metrics=provider)
    queue.add_after("a", 0.0)
    queue.add_after("b", 1.0)
    queue.add_after("b", 2.0)  # ignored (later), still a retry
    queue.add_rate_limited("c")
    assert provider.retries.value == 4
    queue.shutdown()
    queue.add_after("d", 1.0)
    assert provider.retries.value == 4, "not counted after shutdown"


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.mark.looptime
async def test_prometheus_queue_metrics() -> None:
    registry = CollectorRegistry()
    provider = PrometheusMetricsProvider(registry=registry)
    queue = DelayingQueue[str](name="jobs", metrics=provider)
    labels = {"name": "jobs"}
    queue.add("a")
    queue.add("b")
    queue.add_after("c", 1.0)
    await asyncio.sleep(2.0)
    assert sample(registry, "workqueue_adds_total", labels) == 3
    assert sample(registry, "workqueue_retries_total", labels) == 1
    assert sample(registry, "workqueue_depth", labels) == 3
    key = await queue.get()
    assert sample(registry, "workqueue_queue_duration_seconds_count", labels) == 1
    assert sample(registry, "workqueue_queue_duration_seconds_sum", labels) == 2.0
    await asyncio.sleep(7.0)
    assert sample(registry, "workqueue_unfinished_work_seconds", labels) == 7.0
    assert sample(registry, "workqueue_longest_running_processor_seconds", labels) == 7.0
    queue.done(key)
    assert sample(registry, "workqueue_work_duration_seconds_sum", labels) == 7.0
    assert sample(registry, "workqueue_unfinished_work_seconds", labels) == 0.0
    bucket = {"name": "jobs", "le": f"{QUEUE_DURATION_BUCKETS[-1]:.1f}"}
    assert sample(registry, "workqueue_work_duration_seconds_bucket", bucket) == 1


async def test_prometheus_gauges_do_not_keep_a_queue_alive() -> None:
    registry = CollectorRegistry()
    provider = PrometheusMetricsProvider(registry=registry)
    clock = Clock()
    queue = WorkQueue[str](name="gone", metrics=provider, clock=clock)
    queue.add("a")
    queue.get_nowait()
    clock.now += 3.0
    assert sample(registry, "workqueue_unfinished_work_seconds", {"name": "gone"}) == 3.0
    del queue
    gc.collect()
    assert sample(registry, "workqueue_unfinished_work_seconds", {"name": "gone"}) == 0.0


async def test_prometheus_refuses_duplicate_names() -> None:
    provider = PrometheusMetricsProvider(registry=CollectorRegistry())
    WorkQueue[str](name="q", metrics=provider)
    with pytest.raises(ValueError, match="queue name 'q' is already registered"):
        WorkQueue[str](name="q", metrics=provider)
    provider.new_controller_metrics("c")
    with pytest.raises(ValueError, match="controller name 'c' is already registered"):
        provider.new_controller_metrics("c")


def test_prometheus_controller_metrics() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetricsProvider(registry=registry).new_controller_metrics("cron")
    assert metrics is not None
    assert set(metrics.reconcile_total) == set(RECONCILE_RESULTS)
    metrics.reconcile_total["success"].inc()
    metrics.reconcile_errors.inc()
    metrics.reconcile_time.observe(0.3)
    metrics.max_concurrent_reconciles.set(4)
    ctl = {"controller": "cron"}
    assert sample(registry, "controller_runtime_reconcile_total", {**ctl, "result": "success"}) == 1
    assert sample(registry, "controller_runtime_reconcile_total", {**ctl, "result": "error"}) == 0
    assert sample(registry, "controller_runtime_reconcile_errors_total", ctl) == 1
    assert sample(registry, "controller_runtime_reconcile_time_seconds_sum", ctl) == 0.3
    assert sample(registry, "controller_runtime_max_concurrent_reconciles", ctl) == 4

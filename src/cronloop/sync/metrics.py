"""Metrics for work queues and controllers, behind a small provider protocol.

The names are client-go's and controller-runtime's (``workqueue_*``,
``controller_runtime_reconcile_*``) so existing Kubernetes dashboards and alerts work unchanged.
A queue or controller asks its :class:`MetricsProvider` for its instruments once, at
construction; :class:`NoopMetricsProvider` (the default) answers ``None`` and the hot path then
skips metrics entirely. :class:`PrometheusMetricsProvider` registers them in a
``prometheus_client`` registry.

The two "unfinished work" gauges are computed when they are read (at scrape time, through
``Gauge.set_function``) from the queue's own bookkeeping, instead of client-go's 500 ms ticker:
no background task, and the value is never stale.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram

__all__ = [
    "QUEUE_DURATION_BUCKETS",
    "RECONCILE_RESULTS",
    "RECONCILE_TIME_BUCKETS",
    "ControllerMetrics",
    "Counter",
    "Gauge",
    "Histogram",
    "MetricsProvider",
    "NoopMetricsProvider",
    "PrometheusMetricsProvider",
    "QueueMetrics",
    "UnfinishedWorkSource",
]

#: controller-runtime's workqueue buckets: 10 ns to 1000 s, one per decade.
QUEUE_DURATION_BUCKETS: Final = tuple(1e-8 * 10**i for i in range(12))

#: controller-runtime's ``controller_runtime_reconcile_time_seconds`` buckets.
RECONCILE_TIME_BUCKETS: Final = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5),
    *(0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0),
    *(6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0),
)

#: The ``result`` label values of ``controller_runtime_reconcile_total``.
RECONCILE_RESULTS: Final = ("success", "error", "requeue", "requeue_after")


class Counter(Protocol):
    """A monotonically increasing value."""

    def inc(self, amount: float = 1) -> None:
        """Add ``amount``."""
        ...


class Gauge(Protocol):
    """A value that goes up and down."""

    def inc(self, amount: float = 1) -> None:
        """Add ``amount``."""
        ...

    def dec(self, amount: float = 1) -> None:
        """Subtract ``amount``."""
        ...

    def set(self, value: float) -> None:
        """Replace the value."""
        ...


class Histogram(Protocol):
    """A distribution of observed values."""

    def observe(self, amount: float) -> None:
        """Record one value."""
        ...


class UnfinishedWorkSource(Protocol):
    """What a queue exposes so that the two "unfinished" gauges can be computed on demand."""

    def unfinished_work_seconds(self) -> float:
        """Sum of the ages, in seconds, of every item being processed now."""
        ...

    def longest_running_processor_seconds(self) -> float:
        """Age, in seconds, of the oldest item being processed now (0 if none)."""
        ...


@dataclass(frozen=True, slots=True)
class QueueMetrics:
    """The instruments one named work queue updates (client-go's ``queueMetrics``)."""

    depth: Gauge
    adds: Counter
    queue_duration: Histogram
    work_duration: Histogram
    retries: Counter


@dataclass(frozen=True, slots=True)
class ControllerMetrics:
    """The instruments one named controller updates (controller-runtime's metric set).

    ``reconcile_total`` maps each of :data:`RECONCILE_RESULTS` to its counter.
    """

    reconcile_total: Mapping[str, Counter]
    reconcile_errors: Counter
    terminal_reconcile_errors: Counter
    reconcile_timeouts: Counter
    reconcile_time: Histogram
    active_workers: Gauge
    max_concurrent_reconciles: Gauge


class MetricsProvider(Protocol):
    """Creates the instruments of queues and controllers; ``None`` means "no metrics"."""

    def new_queue_metrics(self, name: str, source: UnfinishedWorkSource) -> QueueMetrics | None:
        """Instruments for the queue called ``name``; ``source`` feeds the unfinished gauges."""
        ...

    def new_controller_metrics(self, name: str) -> ControllerMetrics | None:
        """Instruments for the controller called ``name``."""
        ...


class NoopMetricsProvider:
    """Records nothing (the default): queues and controllers then skip metrics altogether."""

    def new_queue_metrics(self, name: str, source: UnfinishedWorkSource) -> QueueMetrics | None:
        """Always ``None``."""
        return None

    def new_controller_metrics(self, name: str) -> ControllerMetrics | None:
        """Always ``None``."""
        return None


def _weak_reader(
    source: UnfinishedWorkSource, read: Callable[[UnfinishedWorkSource], float]
) -> Callable[[], float]:
    # The registry must not keep a dropped queue alive; a collected queue reads as 0.
    ref = weakref.ref(source)

    def value() -> float:
        target = ref()
        return 0.0 if target is None else read(target)

    return value


class PrometheusMetricsProvider:
    """Registers client-go / controller-runtime metrics in a ``prometheus_client`` registry.

    Queue metrics carry a ``name`` label (the queue's name) and controller metrics a
    ``controller`` label. Create one provider per registry (the metric families are registered
    once, in the constructor); names must be unique within a provider.
    """

    def __init__(self, *, registry: CollectorRegistry = REGISTRY) -> None:
        self._registry = registry
        self._queue_names: set[str] = set()
        self._controller_names: set[str] = set()
        label = ["name"]
        self._depth = PromGauge(
            "workqueue_depth", "Current depth of workqueue", label, registry=registry
        )
        self._adds = PromCounter(
            "workqueue_adds", "Total number of adds handled by workqueue", label, registry=registry
        )
        self._latency = PromHistogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            label,
            buckets=QUEUE_DURATION_BUCKETS,
            registry=registry,
        )
        self._work = PromHistogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes.",
            label,
            buckets=QUEUE_DURATION_BUCKETS,
            registry=registry,
        )
        self._unfinished = PromGauge(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been "
            "observed by work_duration. Large values indicate stuck threads. One can deduce "
            "the number of stuck threads by observing the rate at which this increases.",
            label,
            registry=registry,
        )
        self._longest = PromGauge(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running.",
            label,
            registry=registry,
        )
        self._retries = PromCounter(
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            label,
            registry=registry,
        )
        ctl = ["controller"]
        self._reconcile_total = PromCounter(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            ["controller", "result"],
            registry=registry,
        )
        self._reconcile_errors = PromCounter(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            ctl,
            registry=registry,
        )
        self._terminal_errors = PromCounter(
            "controller_runtime_terminal_reconcile_errors",
            "Total number of terminal reconciliation errors per controller",
            ctl,
            registry=registry,
        )
        self._timeouts = PromCounter(
            "controller_runtime_reconcile_timeouts",
            "Total number of reconciliation timeouts per controller",
            ctl,
            registry=registry,
        )
        self._reconcile_time = PromHistogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ctl,
            buckets=RECONCILE_TIME_BUCKETS,
            registry=registry,
        )
        self._active_workers = PromGauge(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            ctl,
            registry=registry,
        )
        self._max_concurrent = PromGauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            ctl,
            registry=registry,
        )

    def new_queue_metrics(self, name: str, source: UnfinishedWorkSource) -> QueueMetrics | None:
        """Label every ``workqueue_*`` family with ``name`` and bind the on-demand gauges.

        :raises ValueError: if a queue called ``name`` was already registered here.
        """
        if name in self._queue_names:
            raise ValueError(f"queue name {name!r} is already registered with this provider")
        self._queue_names.add(name)
        self._unfinished.labels(name).set_function(
            _weak_reader(source, lambda s: s.unfinished_work_seconds())
        )
        self._longest.labels(name).set_function(
            _weak_reader(source, lambda s: s.longest_running_processor_seconds())
        )
        return QueueMetrics(
            depth=self._depth.labels(name),
            adds=self._adds.labels(name),
            queue_duration=self._latency.labels(name),
            work_duration=self._work.labels(name),
            retries=self._retries.labels(name),
        )

    def new_controller_metrics(self, name: str) -> ControllerMetrics | None:
        """Label every ``controller_runtime_*`` family with ``controller=name``.

        :raises ValueError: if a controller called ``name`` was already registered here.
        """
        if name in self._controller_names:
            raise ValueError(f"controller name {name!r} is already registered with this provider")
        self._controller_names.add(name)
        totals = {r: self._reconcile_total.labels(name, r) for r in RECONCILE_RESULTS}
        return ControllerMetrics(
            reconcile_total=MappingProxyType(totals),
            reconcile_errors=self._reconcile_errors.labels(name),
            terminal_reconcile_errors=self._terminal_errors.labels(name),
            reconcile_timeouts=self._timeouts.labels(name),
            reconcile_time=self._reconcile_time.labels(name),
            active_workers=self._active_workers.labels(name),
            max_concurrent_reconciles=self._max_concurrent.labels(name),
        )

"""The sync-loop toolkit: serial loops, work queues, rate limiters, timers, state machines.

``cronloop.sync`` depends on nothing else in cronloop. See docs/sync/index.md.
"""

from __future__ import annotations

from cronloop.sync.keyed import (
    KeyedLooper,
    KeyedLooperStatistics,
)
from cronloop.sync.looper import (
    Handle,
    Looper,
    LooperClosed,
    LooperStatistics,
)
from cronloop.sync.metrics import (
    QUEUE_DURATION_BUCKETS,
    RECONCILE_RESULTS,
    RECONCILE_TIME_BUCKETS,
    ControllerMetrics,
    Counter,
    Gauge,
    Histogram,
    MetricsProvider,
    NoopMetricsProvider,
    PrometheusMetricsProvider,
    QueueMetrics,
    UnfinishedWorkSource,
)
from cronloop.sync.parallel import (
    CancelSignal,
    ConcurrencyTokens,
    ParallelResult,
    TokenStatistics,
    parallelize,
    parallelize_until,
)
from cronloop.sync.ratelimit import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    ItemFastSlowRateLimiter,
    JitterRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    WithMaxWaitRateLimiter,
    default_controller_rate_limiter,
    loop_or_monotonic_time,
)
from cronloop.sync.reconciler import (
    BatchReconciler,
    Controller,
    ControllerStatistics,
    ReconcileFunc,
    Reconciler,
    Result,
    TerminalError,
)
from cronloop.sync.statemachine import (
    InvalidTransition,
    MachineRecord,
    MachineSpec,
    MonotonicPhase,
    OnInvalid,
    Rejected,
    StateMachine,
    StateTimeout,
    Transition,
)
from cronloop.sync.timer import (
    Dispatcher,
    Timer,
    TimerStatistics,
)
from cronloop.sync.workqueue import (
    DelayingQueue,
    RateLimitingQueue,
    ShutDown,
    WorkQueue,
    WorkQueueStatistics,
    WouldBlock,
)

__all__ = [
    "QUEUE_DURATION_BUCKETS",
    "RECONCILE_RESULTS",
    "RECONCILE_TIME_BUCKETS",
    "BatchReconciler",
    "BucketRateLimiter",
    "CancelSignal",
    "ConcurrencyTokens",
    "Controller",
    "ControllerMetrics",
    "ControllerStatistics",
    "Counter",
    "DelayingQueue",
    "Dispatcher",
    "Gauge",
    "Handle",
    "Histogram",
    "InvalidTransition",
    "ItemExponentialFailureRateLimiter",
    "ItemFastSlowRateLimiter",
    "JitterRateLimiter",
    "KeyedLooper",
    "KeyedLooperStatistics",
    "Looper",
    "LooperClosed",
    "LooperStatistics",
    "MachineRecord",
    "MachineSpec",
    "MaxOfRateLimiter",
    "MetricsProvider",
    "MonotonicPhase",
    "NoopMetricsProvider",
    "OnInvalid",
    "ParallelResult",
    "PrometheusMetricsProvider",
    "QueueMetrics",
    "RateLimiter",
    "RateLimitingQueue",
    "ReconcileFunc",
    "Reconciler",
    "Rejected",
    "Result",
    "ShutDown",
    "StateMachine",
    "StateTimeout",
    "TerminalError",
    "Timer",
    "TimerStatistics",
    "TokenStatistics",
    "Transition",
    "UnfinishedWorkSource",
    "WithMaxWaitRateLimiter",
    "WorkQueue",
    "WorkQueueStatistics",
    "WouldBlock",
    "default_controller_rate_limiter",
    "loop_or_monotonic_time",
    "parallelize",
    "parallelize_until",
]

"""Keyed work queues with client-go ``workqueue`` semantics, for one asyncio event loop.

Three layers, as in client-go (docs/sync/workqueue.md has the full rules and a comparison):

- :class:`WorkQueue` — fair (FIFO in add order), stingy (adds of a key that is already waiting
  collapse into one), and a key being processed is never handed out again until ``done``; a key
  re-added while it is processed is queued again, at the tail, by ``done``.
- :class:`DelayingQueue` — adds ``add_after(key, delay)``; a key waiting twice keeps the earliest
  ready time, and everything still waiting is dropped at shutdown.
- :class:`RateLimitingQueue` — adds ``add_rate_limited``, ``forget`` and ``num_requeues`` on top of
  a :class:`~cronloop.sync.ratelimit.RateLimiter`.

Items are keys (hashable, payload-less): a controller enqueues ``"namespace/name"`` and re-reads
the object when it processes the key, which is what makes deduplication safe.

Hand-written because no maintained Python port of client-go's workqueue exists (``aiok8s`` was
abandoned in 2019), and neither ``asyncio.Queue`` nor anyio streams deduplicate or keep a key
from being processed concurrently. Everything runs on the loop thread, so there are no locks;
``add_threadsafe`` hops onto the loop from other threads. Delayed keys live in one heap served by
one loop timer, so 100 000 waiting keys cost 100 000 heap entries, not 100 000 timer handles.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from anyio import WouldBlock

from cronloop.sync.metrics import MetricsProvider, QueueMetrics
from cronloop.sync.ratelimit import (
    RateLimiter,
    default_controller_rate_limiter,
    loop_or_monotonic_time,
)

__all__ = [
    "DelayingQueue",
    "RateLimitingQueue",
    "ShutDown",
    "WorkQueue",
    "WorkQueueStatistics",
    "WouldBlock",
]

K = TypeVar("K", bound=Hashable)

# Rebuild the delay heap when stale entries (keys whose ready time moved earlier) outnumber
# live ones by this factor, so repeated add_after calls cannot grow it without bound.
_HEAP_SLACK = 2


class ShutDown(Exception):
    """Raised by ``get``/``get_nowait`` once the queue is shut down *and* empty.

    Keys queued before the shutdown are still handed out, so workers drain the queue and stop
    on this exception.
    """


@dataclass(frozen=True, slots=True)
class WorkQueueStatistics:
    """A snapshot of a queue, from :meth:`WorkQueue.statistics`."""

    #: Keys ready to be handed out by ``get`` (what ``len()`` returns).
    queued: int
    #: Keys that need processing: the queued ones plus keys re-added while being processed.
    dirty: int
    #: Keys handed out by ``get`` and not yet ``done``.
    processing: int
    #: Tasks blocked in ``get``.
    waiting_getters: int
    #: Keys waiting for their ``add_after`` delay (always 0 for a plain :class:`WorkQueue`).
    delayed: int
    #: True once ``shutdown`` or ``shutdown_with_drain`` was called.
    shutting_down: bool


class _ProcessingAges(Generic[K]):
    """Feeds the on-demand "unfinished work" gauges from the queue's processing start times."""

    __slots__ = ("__weakref__", "_processing", "clock")

    def __init__(self, processing: dict[K, float], clock: Callable[[], float]) -> None:
        self._processing = processing
        self.clock = clock

    def unfinished_work_seconds(self) -> float:
        now = self.clock()
        return sum(now - start for start in self._processing.values())

    def longest_running_processor_seconds(self) -> float:
        if not self._processing:
            return 0.0
        return self.clock() - min(self._processing.values())


class WorkQueue(Generic[K]):
    """A fair, deduplicating queue of keys that never hands out a key being processed.

    Use it from the event loop thread only (``add_threadsafe`` is the exception). A worker does::

        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            try:
                ...  # re-read the state of `key` and act on it
            finally:
                queue.done(key)

    ``name`` and ``metrics`` enable the ``workqueue_*`` metrics (only named queues report, as
    in client-go). ``clock`` returns seconds and is used for metric durations and delays; it
    defaults to the running loop's clock and must advance at the same rate as that clock.
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        metrics: MetricsProvider | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._name = name
        # Without an injected clock the queue uses its loop's clock once bound to a loop (also
        # when called from outside the running loop), and the running loop's before that.
        self._clock: Callable[[], float] = clock if clock is not None else loop_or_monotonic_time
        self._clock_is_loop = clock is None
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        # key -> processing start time (only measured when metrics are on; 0.0 otherwise).
        self._processing: dict[K, float] = {}
        self._getters: deque[asyncio.Future[None]] = deque()
        self._drainers: list[asyncio.Future[None]] = []
        self._shutting_down = False
        self._ages: _ProcessingAges[K] = _ProcessingAges(self._processing, self._clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._bind(asyncio.get_running_loop())
        self._metrics: QueueMetrics | None = None
        self._add_times: dict[K, float] = {}
        if name is not None and metrics is not None:
            self._metrics = metrics.new_queue_metrics(name, self._ages)

    def __repr__(self) -> str:
        s = self.statistics()
        state = " shutting-down" if s.shutting_down else ""
        return (
            f"<{type(self).__name__} name={self._name!r} queued={s.queued} "
            f"processing={s.processing} delayed={s.delayed}{state}>"
        )

    @property
    def name(self) -> str | None:
        """The queue's name (the ``name`` label of its metrics), if any."""
        return self._name

    @property
    def shutting_down(self) -> bool:
        """True once ``shutdown`` or ``shutdown_with_drain`` has been called."""
        return self._shutting_down

    def __len__(self) -> int:
        return len(self._queue)

    def len(self) -> int:
        """Keys ready to be handed out; informational only, never gate ``add``/``get`` on it."""
        return len(self._queue)

    def statistics(self) -> WorkQueueStatistics:
        """A snapshot of the queue's sizes and state."""
        return WorkQueueStatistics(
            queued=len(self._queue),
            dirty=len(self._dirty),
            processing=len(self._processing),
            waiting_getters=len(self._getters),
            delayed=self._num_delayed(),
            shutting_down=self._shutting_down,
        )

    def _num_delayed(self) -> int:
        return 0

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self._clock_is_loop:
            self._clock = self._ages.clock = loop.time

    def _bound_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = asyncio.get_running_loop()
            self._bind(loop)
        return loop

    # -- adding ---------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Mark ``key`` as needing processing.

        Ignored after shutdown and while ``key`` already waits; a key being processed is
        queued again (at the tail) when its worker calls ``done``.
        """
        dirty = self._dirty
        # The dedup check comes first: it is the common no-op on busy queues.
        if key in dirty or self._shutting_down:
            return
        dirty.add(key)
        metrics = self._metrics
        if metrics is not None:
            if key not in self._add_times:
                self._add_times[key] = self._clock()
            metrics.adds.inc()
            metrics.depth.inc()
        if key in self._processing:
            return
        self._queue.append(key)
        if self._getters:
            self._wake_one_getter()

    def add_threadsafe(self, key: K) -> None:
        """``add`` from any thread: the add runs on the queue's loop soon after.

        :raises RuntimeError: if the queue is not bound to a loop yet (create it inside the
            loop, or use it there once, before handing it to other threads).
        """
        if self._loop is None:
            raise RuntimeError(
                f"{self!r} is not bound to an event loop yet: create it inside the running loop"
            )
        self._loop.call_soon_threadsafe(self.add, key)

    def _wake_one_getter(self) -> None:
        getters = self._getters
        while getters:
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    # -- taking ---------------------------------------------------------------------------

    async def get(self) -> K:
        """Wait for the next key and mark it as being processed; the caller must ``done`` it.

        Returns without suspending when a key is ready (like ``asyncio.Queue.get``).

        :raises ShutDown: once the queue is shut down and no key is left.
        """
        queue = self._queue
        while not queue:
            if self._shutting_down:
                raise ShutDown(f"{self!r} is shut down")
            fut = self._bound_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(fut)
                # We were woken but are leaving: hand the wake-up to the next getter.
                if queue and not fut.cancelled():
                    self._wake_one_getter()
                raise
        return self._take(queue.popleft())

    def get_nowait(self) -> K:
        """The next key, if one is ready, marked as being processed.

        :raises WouldBlock: if no key is ready (``anyio.WouldBlock``, re-exported here).
        :raises ShutDown: once the queue is shut down and no key is left.
        """
        if not self._queue:
            if self._shutting_down:
                raise ShutDown(f"{self!r} is shut down")
            raise WouldBlock(f"{self!r} has no key ready")
        return self._take(self._queue.popleft())

    def _take(self, key: K) -> K:
        self._dirty.discard(key)
        metrics = self._metrics
        if metrics is None:
            self._processing[key] = 0.0
        else:
            now = self._processing[key] = self._clock()
            metrics.depth.dec()
            added = self._add_times.pop(key, None)
            if added is not None:
                metrics.queue_duration.observe(now - added)
        return key

    def done(self, key: K) -> None:
        """Mark ``key`` as processed; if it was re-added meanwhile, queue it again at the tail.

        :raises ValueError: if ``key`` is not being processed (never handed out, or already
            done); client-go ignores this silently, but it is always a worker bug.
        """
        try:
            started = self._processing.pop(key)
        except KeyError:
            raise ValueError(f"done({key!r}): the key is not being processed") from None
        metrics = self._metrics
        if metrics is not None:
            metrics.work_duration.observe(self._clock() - started)
        if key in self._dirty:
            self._queue.append(key)
            if self._getters:
                self._wake_one_getter()
        elif not self._processing and self._drainers:
            self._release_drainers()

    # -- shutting down --------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop accepting adds; ``get`` hands out what is queued, then raises ``ShutDown``.

        Idempotent. Also ends any ``shutdown_with_drain`` wait early.
        """
        self._shut()
        self._release_drainers()

    async def shutdown_with_drain(self) -> None:
        """Shut down, then wait until every key handed out is ``done``.

        Keep the workers running during the drain: the wait is on processing keys, not on the
        queue. A later ``shutdown()`` ends the wait early.
        """
        self._shut()
        if not self._processing:
            return
        fut = self._bound_loop().create_future()
        self._drainers.append(fut)
        try:
            await fut
        finally:
            if fut in self._drainers:
                self._drainers.remove(fut)

    def _shut(self) -> None:
        if self._shutting_down:
            return
        self._shutting_down = True
        # Every waiting getter re-checks: it takes a queued key or raises ShutDown.
        getters, self._getters = self._getters, deque()
        for fut in getters:
            if not fut.done():
                fut.set_result(None)

    def _release_drainers(self) -> None:
        drainers, self._drainers = self._drainers, []
        for fut in drainers:
            if not fut.done():
                fut.set_result(None)


class DelayingQueue(WorkQueue[K]):
    """A :class:`WorkQueue` that can also add a key after a delay (client-go ``AddAfter``)."""

    def __init__(
        self,
        *,
        name: str | None = None,
        metrics: MetricsProvider | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name=name, metrics=metrics, clock=clock)
        # Min-heap of (ready_at, seq, key); `_waiting` holds each key's live entry, so an entry
        # superseded by an earlier ready time is recognised (and skipped) by identity.
        self._heap: list[tuple[float, int, K]] = []
        self._waiting: dict[K, tuple[float, int, K]] = {}
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def _num_delayed(self) -> int:
        return len(self._waiting)

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` once ``delay`` seconds have passed.

        ``delay <= 0`` adds at once. A key already waiting keeps the earlier of its two ready
        times. Ignored after shutdown; keys still waiting at shutdown are dropped.

        :raises ValueError: if ``delay`` is NaN.
        """
        if self._shutting_down:
            return
        if delay != delay:
            raise ValueError(f"add_after({key!r}): delay must be a number of seconds, got NaN")
        if self._metrics is not None:
            self._metrics.retries.inc()
        if delay <= 0:
            self.add(key)
            return
        if self._loop is None:
            self._bound_loop()  # the delay needs the loop's timer, and its clock
        ready_at = self._clock() + delay
        old = self._waiting.get(key)
        if old is not None and old[0] <= ready_at:
            return
        entry = (ready_at, next(self._seq), key)
        self._waiting[key] = entry
        heap = self._heap
        heapq.heappush(heap, entry)
        if old is not None and len(heap) > _HEAP_SLACK * len(self._waiting) + 64:
            self._compact()
        if ready_at < self._timer_at:
            self._arm(ready_at)

    def _compact(self) -> None:
        self._heap = list(self._waiting.values())
        heapq.heapify(self._heap)

    def _arm(self, ready_at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = self._bound_loop()
        when = ready_at if self._clock_is_loop else loop.time() + (ready_at - self._clock())
        self._timer = loop.call_at(when, self._on_timer)
        self._timer_at = ready_at

    def _on_timer(self) -> None:
        # The loop judged the timer due; its clock may run a hair behind `ready_at` (asyncio
        # fires within one clock resolution), so the armed time counts as "now" too.
        now = max(self._clock(), self._timer_at)
        self._timer = None
        self._timer_at = math.inf
        heap, waiting = self._heap, self._waiting
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            key = entry[2]
            if waiting.get(key) is entry:
                del waiting[key]
                self.add(key)
        while heap and waiting.get(heap[0][2]) is not heap[0]:
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0][0])

    def _shut(self) -> None:
        if not self._shutting_down:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = math.inf
            self._heap = []
            self._waiting.clear()
        super()._shut()


class RateLimitingQueue(DelayingQueue[K]):
    """A :class:`DelayingQueue` whose retries are spaced by a rate limiter.

    ``rate_limiter`` defaults to :func:`~cronloop.sync.ratelimit.default_controller_rate_limiter`
    (exponential 5 ms..1000 s per key, max'ed with a 10 qps / burst 100 bucket).
    """

    def __init__(
        self,
        rate_limiter: RateLimiter[K] | None = None,
        *,
        name: str | None = None,
        metrics: MetricsProvider | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name=name, metrics=metrics, clock=clock)
        self._limiter: RateLimiter[K] = (
            rate_limiter if rate_limiter is not None else default_controller_rate_limiter()
        )

    @property
    def rate_limiter(self) -> RateLimiter[K]:
        """The limiter that spaces retries."""
        return self._limiter

    def add_rate_limited(self, key: K) -> None:
        """``add_after(key, rate_limiter.when(key))``: retry ``key`` after its backoff.

        Ignored after shutdown; unlike client-go the limiter is then not consulted, so a
        stopping controller does not grow failure counts nobody will read.
        """
        if self._shutting_down:
            return
        self.add_after(key, self._limiter.when(key))

    def forget(self, key: K) -> None:
        """Clear ``key``'s retry history (on success or permanent failure). Not ``done``."""
        self._limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        """How many rate-limited retries ``key`` has had since it was last forgotten."""
        return self._limiter.num_requeues(key)

"""The controller runner: N workers reconciling keys from a :class:`RateLimitingQueue`.

controller-runtime semantics (primitives.md 1.7, docs/sync/workqueue.md): each worker takes a
key, awaits ``reconcile(key)`` and marks the key done. The queue guarantees a key is never
reconciled by two workers at once, and a key re-added during its reconcile runs again after it.

- the reconciler raises → the key is retried after its backoff (``add_rate_limited``), unless
  the error is a :class:`TerminalError`;
- it returns ``Result(requeue_after=t)`` → its backoff is reset and it runs again after ``t`` s;
- it returns ``Result()`` or ``None`` → its backoff is reset (``forget``).

An exception never kills a worker: it is logged once, counted, and turned into a retry.

**Batches.** A reconciler that also has ``reconcile_batch(keys)`` (:class:`BatchReconciler`)
can be given ``max_batch > 1``: a worker then takes every key that is ready, up to
``max_batch``, and reconciles them in one ``reconcile_batch`` call (a lone key too), which
lets the reconciler record all their decisions in one store transaction. Each key still gets
its own outcome (a result, or an exception for that key alone), and none of the keys of a
batch is handed to another worker until the batch is done, so "never two reconciles of one
key at once" holds as before.
Hand-written because the runner is a few dozen lines over our own queue; the libraries that do
this (kopf, controller-runtime) are bound to Kubernetes objects.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

from cronloop.sync.metrics import ControllerMetrics, MetricsProvider
from cronloop.sync.ratelimit import RateLimiter, loop_or_monotonic_time
from cronloop.sync.workqueue import RateLimitingQueue, ShutDown, WorkQueueStatistics, WouldBlock

__all__ = [
    "BatchReconciler",
    "Controller",
    "ControllerStatistics",
    "ReconcileFunc",
    "Reconciler",
    "Result",
    "TerminalError",
]

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)


@dataclass(frozen=True, slots=True)
class Result:
    """What a reconcile asks for next.

    ``requeue_after=None`` means "done until something changes"; a number of seconds means
    "look again after that long" (with the key's error backoff reset). ``0`` requeues at once;
    controller-runtime would treat 0 as "not set", but here ``None`` already says that.
    """

    requeue_after: float | None = None

    def __post_init__(self) -> None:
        value = self.requeue_after
        if value is not None and (
            not isinstance(value, int | float) or not math.isfinite(value) or value < 0
        ):
            raise ValueError(
                f"requeue_after must be None or a finite number of seconds >= 0, got {value!r}"
            )


class TerminalError(Exception):
    """Raised by a reconciler for an error that retrying cannot fix: the key is not requeued.

    Chain the cause: ``raise TerminalError("spec is invalid") from exc``. The key's backoff is
    forgotten (controller-runtime keeps it, which only leaks memory for a key nobody retries).
    """


@runtime_checkable
class Reconciler(Protocol[K_contra]):
    """Drives the object named by a key towards its desired state."""

    async def reconcile(self, key: K_contra) -> Result | None:
        """Re-read the object behind ``key`` and act; raise to retry with backoff."""
        ...


@runtime_checkable
class BatchReconciler(Reconciler[K_contra], Protocol[K_contra]):
    """A reconciler that can also drive several objects in one call."""

    async def reconcile_batch(
        self, keys: Sequence[K_contra]
    ) -> Sequence[Result | Exception | None]:
        """Reconcile every key of ``keys`` (distinct) and return one outcome per key, in order:
        its result, or the exception that key failed with (the others are unaffected).
        Raising fails every key of the batch."""
        ...


#: A plain async function works as a reconciler too.
ReconcileFunc = Callable[[K], Awaitable[Result | None]]


@dataclass(frozen=True, slots=True)
class ControllerStatistics:
    """A snapshot of a :class:`Controller`, from :meth:`Controller.statistics`."""

    workers: int
    #: Workers inside a reconcile right now.
    active_workers: int
    #: Reconciles that returned without a requeue.
    succeeded: int
    #: Reconciles that returned ``Result(requeue_after=...)``.
    requeued_after: int
    #: Reconciles that raised (terminal errors and timeouts included).
    errors: int
    terminal_errors: int
    timeouts: int
    queue: WorkQueueStatistics


class Controller(Generic[K]):
    """Runs ``workers`` tasks that reconcile keys from its :attr:`queue`.

    Feed it with ``controller.queue.add(key)`` (or :meth:`enqueue`), run it with
    ``await controller.run()`` (typically inside your own task group) and end it with
    :meth:`stop`, or by cancelling ``run``.

    ``rate_limiter`` spaces retries (default: client-go's controller limiter).
    ``reconcile_timeout`` bounds one reconcile in seconds; a timeout counts as an error.
    ``name`` and ``metrics`` enable the ``controller_runtime_*`` and ``workqueue_*`` metrics.
    """

    def __init__(
        self,
        reconciler: Reconciler[K] | ReconcileFunc[K],
        *,
        name: str | None = None,
        workers: int = 1,
        rate_limiter: RateLimiter[K] | None = None,
        reconcile_timeout: float | None = None,
        metrics: MetricsProvider | None = None,
        clock: Callable[[], float] | None = None,
        max_batch: int = 1,
    ) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        self._reconcile_batch: (
            Callable[[Sequence[K]], Awaitable[Sequence[Result | Exception | None]]] | None
        ) = None
        if max_batch > 1:
            if not isinstance(reconciler, BatchReconciler):
                raise ValueError("max_batch > 1 needs a reconciler with reconcile_batch(keys)")
            self._reconcile_batch = reconciler.reconcile_batch
        self._max_batch = max_batch
        if reconcile_timeout is not None and not (
            isinstance(reconcile_timeout, int | float) and reconcile_timeout > 0
        ):
            raise ValueError(
                f"reconcile_timeout must be None or seconds > 0, got {reconcile_timeout!r}"
            )
        self._reconcile: ReconcileFunc[K] = (
            reconciler.reconcile if isinstance(reconciler, Reconciler) else reconciler
        )
        self._name = name
        self._workers = workers
        self._timeout = reconcile_timeout
        self._clock = clock if clock is not None else loop_or_monotonic_time
        self._queue: RateLimitingQueue[K] = RateLimitingQueue(
            rate_limiter, name=name, metrics=metrics, clock=clock
        )
        self._metrics: ControllerMetrics | None = None
        if name is not None and metrics is not None:
            self._metrics = metrics.new_controller_metrics(name)
        self._started = False
        self._abandon = False
        self._active = 0
        self._succeeded = 0
        self._requeued_after = 0
        self._errors = 0
        self._terminal = 0
        self._timeouts = 0

    def __repr__(self) -> str:
        return f"<Controller name={self._name!r} workers={self._workers} queue={self._queue!r}>"

    @property
    def queue(self) -> RateLimitingQueue[K]:
        """The queue the workers take keys from; add keys here."""
        return self._queue

    def enqueue(self, key: K) -> None:
        """Shorthand for ``queue.add(key)``."""
        self._queue.add(key)

    def statistics(self) -> ControllerStatistics:
        """Counters since construction and a snapshot of the queue."""
        return ControllerStatistics(
            workers=self._workers,
            active_workers=self._active,
            succeeded=self._succeeded,
            requeued_after=self._requeued_after,
            errors=self._errors,
            terminal_errors=self._terminal,
            timeouts=self._timeouts,
            queue=self._queue.statistics(),
        )

    async def run(self) -> None:
        """Run the workers until :meth:`stop` (or cancellation); at most once per controller.

        Cancelling ``run`` cancels the reconciles in flight; either way the queue is shut down
        when it returns.

        :raises RuntimeError: if the controller was already run.
        """
        if self._started:
            raise RuntimeError(f"{self!r} was already run: a controller runs once")
        self._started = True
        if self._metrics is not None:
            self._metrics.max_concurrent_reconciles.set(self._workers)
        try:
            async with asyncio.TaskGroup() as tg:
                for i in range(self._workers):
                    tg.create_task(self._worker(), name=f"{self._name or 'controller'}-worker-{i}")
        finally:
            self._queue.shutdown()

    def stop(self, *, drain: bool = True) -> None:
        """Ask the workers to stop; ``run`` returns once they have.

        With ``drain`` the keys already queued are still reconciled (delayed ones are dropped);
        without it each worker stops after its current reconcile.
        """
        if not drain:
            self._abandon = True
        self._queue.shutdown()

    def _abandoned(self) -> bool:
        # A method, not the attribute inline: stop() flips it while a worker awaits.
        return self._abandon

    async def _worker(self) -> None:
        queue = self._queue
        while not self._abandoned():
            try:
                key = await queue.get()
            except ShutDown:
                return
            if self._abandoned():
                # stop(drain=False) came while this worker was being woken: leave the key.
                queue.done(key)
                return
            keys = [key]
            while len(keys) < self._max_batch:
                try:
                    keys.append(queue.get_nowait())
                except (WouldBlock, ShutDown):
                    break
            try:
                if self._reconcile_batch is None:
                    await self._reconcile_one(key)
                else:
                    await self._reconcile_many(keys)
            finally:
                for taken in keys:
                    queue.done(taken)
            # Let the rest of the loop in between reconciles: one that never suspends (its
            # reads all answered from memory) would otherwise run a queue of 100,000 keys
            # back to back, with every timer, report and request waiting behind it.
            await asyncio.sleep(0)

    async def _reconcile_one(self, key: K) -> None:
        self._begin()
        started = self._clock()
        deadline: asyncio.Timeout | None = None
        try:
            if self._timeout is None:
                result = await self._reconcile(key)
            else:
                async with asyncio.timeout(self._timeout) as deadline:
                    result = await self._reconcile(key)
        except Exception as exc:
            self._end(1, started)
            self._on_error(key, exc, timed_out=deadline is not None and deadline.expired())
            return
        self._end(1, started)
        self._on_result(key, result)

    async def _reconcile_many(self, keys: list[K]) -> None:
        assert self._reconcile_batch is not None
        self._begin()
        started = self._clock()
        deadline: asyncio.Timeout | None = None
        try:
            async with asyncio.timeout(self._timeout) as deadline:
                outcomes = await self._reconcile_batch(keys)
            if len(outcomes) != len(keys):
                raise RuntimeError(
                    f"reconcile_batch returned {len(outcomes)} outcomes for {len(keys)} keys"
                )
        except Exception as exc:
            self._end(len(keys), started)
            timed_out = deadline is not None and deadline.expired()
            # One failure of the whole batch: logged once, counted and retried per key.
            logger.error(
                "%s: reconcile of a batch of %d keys (%r, ...) failed%s",
                self._name or "controller",
                len(keys),
                keys[0],
                " (timed out)" if timed_out else "",
                exc_info=exc,
            )
            for key in keys:
                self._on_error(key, exc, timed_out=timed_out, log=False)
            return
        self._end(len(keys), started)
        for key, outcome in zip(keys, outcomes, strict=True):
            if isinstance(outcome, Exception):
                self._on_error(key, outcome, timed_out=False)
            else:
                self._on_result(key, outcome)

    def _begin(self) -> None:
        self._active += 1
        if self._metrics is not None:
            self._metrics.active_workers.inc()

    def _end(self, keys: int, started: float) -> None:
        """One worker is out of its reconcile, which took every one of ``keys`` that long."""
        self._active -= 1
        metrics = self._metrics
        if metrics is not None:
            metrics.active_workers.dec()
            elapsed = self._clock() - started
            for _ in range(keys):
                metrics.reconcile_time.observe(elapsed)

    def _on_result(self, key: K, result: Result | None) -> None:
        metrics = self._metrics
        queue = self._queue
        queue.forget(key)
        if result is not None and result.requeue_after is not None:
            queue.add_after(key, result.requeue_after)
            self._requeued_after += 1
            if metrics is not None:
                metrics.reconcile_total["requeue_after"].inc()
        else:
            self._succeeded += 1
            if metrics is not None:
                metrics.reconcile_total["success"].inc()

    def _on_error(self, key: K, exc: Exception, *, timed_out: bool, log: bool = True) -> None:
        metrics = self._metrics
        self._errors += 1
        if metrics is not None:
            metrics.reconcile_errors.inc()
            metrics.reconcile_total["error"].inc()
        if timed_out:
            self._timeouts += 1
            if metrics is not None:
                metrics.reconcile_timeouts.inc()
        if isinstance(exc, TerminalError):
            self._terminal += 1
            if metrics is not None:
                metrics.terminal_reconcile_errors.inc()
            self._queue.forget(key)
            if log:
                logger.error(
                    "%s: reconcile of %r failed terminally, not retrying",
                    self._name or "controller",
                    key,
                    exc_info=exc,
                )
            return
        self._queue.add_rate_limited(key)
        if log:
            logger.error(
                "%s: reconcile of %r failed%s, retry %d",
                self._name or "controller",
                key,
                " (timed out)" if timed_out else "",
                self._queue.num_requeues(key),
                exc_info=exc,
            )

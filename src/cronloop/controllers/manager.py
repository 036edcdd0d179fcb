"""The manager: runs the CronJob and Job controllers of one process against a store.

Like the kubelet's sync loop it takes work from several sources and never trusts any single
one: the store's change feed (every CronJob, Job and SubJob change enqueues the objects it
concerns), the controllers' own requeues (timers on their delaying queues), and a periodic
resync that enqueues every CronJob and every unfinished Job (from the controllers' cache, see
:mod:`cronloop.controllers.cache`), so a lost wake-up is never permanent. When the store
fails, the feed backs off exponentially from 100 ms to 5 s and then re-lists, which is also
how it recovers from a compacted history.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cronloop.controllers.admission import AdmissionController
from cronloop.controllers.cache import CachedStore, ObjectCache
from cronloop.controllers.clock import Clock, SystemClock
from cronloop.controllers.cronjob import CronJobController, job_phase
from cronloop.controllers.heap import HeapKeeper
from cronloop.controllers.job import JobController
from cronloop.controllers.logsweep import LogSweeper
from cronloop.controllers.objects import CRONJOB_LABEL, JOB_LABEL
from cronloop.runtimes import Runtime
from cronloop.store import EventType, Expired, Store, WatchEvent
from cronloop.sync import (
    Controller,
    ItemExponentialFailureRateLimiter,
    MetricsProvider,
)

__all__ = [
    "FEED_BACKOFF_MAX",
    "FEED_BACKOFF_MIN",
    "REPORT_LINGER",
    "Manager",
    "ManagerStatistics",
]

logger = logging.getLogger(__name__)

#: Seconds a report waits before its job's pass, gathering the reports that come with it.
REPORT_LINGER = 0.005
FEED_BACKOFF_MIN = 0.1
FEED_BACKOFF_MAX = 5.0
_KINDS = ("CronJob", "Job", "SubJob")


@dataclass(frozen=True, slots=True)
class ManagerStatistics:
    """What the manager has done since it started."""

    events: int
    resyncs: int
    feed_errors: int
    recovered_attempts: int
    last_revision: int
    long_running_warnings: int
    cronjob_reconciles: int
    job_reconciles: int
    reconcile_errors: int


class Manager:
    """Owns the controllers, their queues and their event sources; ``await run()`` until stopped.

    The manager owns the runtimes it is given: when :meth:`run` returns they are closed
    (running attempts are cancelled with reason ``RuntimeShutdown`` and their final reports are
    written), so an AtLeastOnce run interrupted by a restart is started again afterwards.
    """

    def __init__(
        self,
        store: Store,
        runtimes: Mapping[str, Runtime],
        *,
        log_dir: Path,
        clock: Clock | None = None,
        admission: AdmissionController | None = None,
        cronjob_workers: int = 128,
        cronjob_batch: int = 32,
        job_workers: int = 16,
        job_batch: int = 64,
        report_linger: float = REPORT_LINGER,
        resync_period: float = 30.0,
        metrics: MetricsProvider | None = None,
        tune_gc: bool = False,
    ) -> None:
        self._store = store
        #: The collector policy, applied once the cache is loaded (see controllers.heap).
        self.heap = HeapKeeper() if tune_gc else None
        self._runtimes = runtimes
        self._clock = clock or SystemClock()
        self._resync_period = resync_period
        #: What the controllers read: the feed keeps it current, their writes go through it.
        self.cache = ObjectCache(_KINDS)
        view = CachedStore(store, self.cache)
        self.jobs = JobController(view, runtimes, clock=self._clock, log_dir=log_dir)
        #: Removes the logs of deleted Jobs; fed by the change feed (see :meth:`_feed`).
        self.logs = LogSweeper(log_dir)
        # Runs are created with their sub-jobs and started by the CronJob controller itself.
        self.cronjobs = CronJobController(
            view, clock=self._clock, starter=self.jobs, admission=admission
        )
        # A failing reconcile (the store is down, a conflict) is retried per object from
        # 100 ms doubling to 5 s, like the kubelet's sync loop backs off from its runtime.
        # Many workers with small batches: a run starts only after its whole batch is decided
        # and committed, so small batches start the first runs of a batch sooner, and many of
        # them in flight still give the writer big groups (trigger benchmark, 10,000 runs
        # spread over 5 s: p99 lateness 53 ms at 32 x 128, 43 ms at 128 x 32, the same burst
        # throughput within noise).
        self._cronjob_loop: Controller[str] = Controller(
            self.cronjobs,
            name="cronjob",
            workers=cronjob_workers,
            metrics=metrics,
            rate_limiter=ItemExponentialFailureRateLimiter(FEED_BACKOFF_MIN, FEED_BACKOFF_MAX),
            max_batch=cronjob_batch,
        )
        # Jobs are reconciled in batches: every job ready at once (up to ``job_batch``) is
        # decided in one pass and committed in one transaction.
        self._job_loop: Controller[str] = Controller(
            self.jobs,
            name="job",
            workers=job_workers,
            metrics=metrics,
            rate_limiter=ItemExponentialFailureRateLimiter(FEED_BACKOFF_MIN, FEED_BACKOFF_MAX),
            max_batch=job_batch,
        )
        self.jobs.enqueue = self._job_loop.enqueue
        self.jobs.run_finished = self._cronjob_loop.enqueue
        self.jobs.enqueue_report = lambda name: self._job_loop.queue.add_after(name, report_linger)
        self._events = 0
        self._resyncs = 0
        self._feed_errors = 0
        self._recovered = 0
        self._revision = 0
        #: The store revision of the first listing, once :meth:`wait_ready` has returned: the
        #: cache holds every object as of it or newer, so a reader of the cache that wants the
        #: changes from then on watches from it (``cronloop up``'s run printer does).
        self.listed_revision = 0
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()

    def statistics(self) -> ManagerStatistics:
        cj = self._cronjob_loop.statistics()
        jb = self._job_loop.statistics()
        return ManagerStatistics(
            events=self._events,
            resyncs=self._resyncs,
            feed_errors=self._feed_errors,
            recovered_attempts=self._recovered,
            last_revision=self._revision,
            long_running_warnings=self.jobs.long_running_warnings,
            cronjob_reconciles=cj.succeeded + cj.requeued_after + cj.errors,
            job_reconciles=jb.succeeded + jb.requeued_after + jb.errors,
            reconcile_errors=cj.errors + jb.errors,
        )

    async def wait_ready(self) -> None:
        """Wait until recovery ran and the first listing was enqueued."""
        await self._ready.wait()

    def stop(self) -> None:
        """Ask :meth:`run` to return (queued work is drained, delayed work is dropped)."""
        self._stopping.set()

    async def run(self) -> None:
        """Recover, then run controllers, change feed and resync until :meth:`stop`."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._cronjob_loop.run(), name="cronjob-controller")
                tg.create_task(self._job_loop.run(), name="job-controller")
                self._recovered = await self.jobs.recover()
                feed = tg.create_task(self._feed(), name="change-feed")
                resync = tg.create_task(self._resync(), name="resync")
                pacer = None if self.heap is None else tg.create_task(self.heap.run(), name="gc")
                await self._stopping.wait()
                feed.cancel()
                resync.cancel()
                if pacer is not None:
                    pacer.cancel()
                self._cronjob_loop.stop()
                self.jobs.dispatching = False
                # From now on reports do not linger (the loop drops delayed keys when it
                # stops), and those lingering now are taken at once.
                self.jobs.enqueue_report = self._job_loop.enqueue
                for name in self.jobs.waiting_reports():
                    self._job_loop.enqueue(name)
                await self._close_runtimes()
                # Their final reports are in the inboxes: the job loop drains them.
                self._job_loop.stop()
        finally:
            self.logs.close()
            await self._close_runtimes()
            if self.heap is not None:
                self.heap.release()

    async def _close_runtimes(self) -> None:
        """Cancel what still runs (reason RuntimeShutdown); idempotent."""
        for runtime in self._runtimes.values():
            try:
                await runtime.aclose()
            except Exception:
                logger.exception("closing runtime %r failed", runtime)

    # ---- sources ----------------------------------------------------------------------------

    async def _list_all(self) -> int:
        # Owned objects first: a controller enqueued below must find its runs and sub-jobs.
        listings = {kind: await self._store.list(kind) for kind in reversed(_KINDS)}
        for kind, listing in listings.items():
            self.cache.replace(kind, listing.items, listing.revision)
        self._enqueue_cached()
        return min(listing.revision for listing in listings.values())

    async def _feed(self) -> None:
        backoff = FEED_BACKOFF_MIN
        while True:
            try:
                revision = await self._list_all()
                if not self._ready.is_set():
                    if self.heap is not None:
                        self.heap.settle()  # the cache is loaded: keep the collector off it
                    self.listed_revision = revision
                    # Logs of Jobs deleted while no feed was watching (a crash, downtime).
                    self.logs.sweep(obj.name for obj in self.cache.objects("Job"))
                self._ready.set()
                async for event in self._store.watch(kinds=_KINDS, from_revision=revision):
                    obj = event.object
                    # Every deletion, this manager's own (pruned runs) included: the feed is
                    # the one place that sees them all.
                    self.logs.observe(event)
                    # The very object the cache holds: a write this manager's controllers made
                    # through the cache. Whoever wrote it has told whoever needed to know.
                    if self.cache.get(obj.kind, obj.name) is not obj:
                        if event.type is EventType.DELETED:
                            self.cache.forget(obj)
                        else:
                            self.cache.observe(obj)
                        self._route(event)
                    self.cache.fed_to(event.revision)
                    self._events += 1
                    self._revision = event.revision
                    backoff = FEED_BACKOFF_MIN
            except Expired:
                logger.info("change feed history was compacted; listing again")
            except Exception:
                self._feed_errors += 1
                logger.exception("change feed failed; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(FEED_BACKOFF_MAX, backoff * 2)

    def _route(self, event: WatchEvent) -> None:
        """Enqueue the objects a change made elsewhere concerns, and only those (the API's
        writes, another process's, a listing's)."""
        obj = event.object
        if obj.kind == "CronJob":
            if self.cronjobs.observed.get(obj.name) != obj.resource_version:
                self._cronjob_loop.enqueue(obj.name)
        elif obj.kind == "Job":
            terminal = job_phase(obj).terminal
            if event.type is not EventType.DELETED:
                self._job_loop.enqueue(obj.name)  # new, or changed (a cancel request)
            elif self.jobs.deleted(obj.name) or not terminal:
                # Deleted while it ran, or while attempts of it still run (a finished run
                # pruned while its last attempts stop): its pass stops them and drops what
                # waits for it.
                self._job_loop.enqueue(obj.name)
            # A CronJob cares when its set of active runs changes: a run created, finished,
            # or deleted while active.
            owner = obj.labels.get(CRONJOB_LABEL)
            if owner is not None and (
                event.type is EventType.ADDED or not terminal or (event.type is EventType.MODIFIED)
            ):
                self._cronjob_loop.enqueue(owner)
        elif obj.kind == "SubJob":
            job = obj.labels.get(JOB_LABEL)
            # A deleted sub-job matters only if its attempts still run (its job's pass stops
            # them); with its job, it goes unnoticed otherwise.
            if job is not None and (event.type is not EventType.DELETED or self.jobs.deleted(job)):
                self._job_loop.enqueue(job)

    def _enqueue_cached(self) -> None:
        """Enqueue, from the cache, every CronJob not reconciled at its current version and
        every unfinished Job (after a listing, and at every resync; no store read)."""
        observed = self.cronjobs.observed
        for obj in self.cache.objects("CronJob"):
            # A CronJob unchanged since its last reconcile already waits for its next time.
            if observed.get(obj.name) != obj.resource_version:
                self._cronjob_loop.enqueue(obj.name)
        for obj in self.cache.objects("Job"):
            if not job_phase(obj).terminal:
                self._job_loop.enqueue(obj.name)

    async def _resync(self) -> None:
        # Like client-go's informers, a resync replays the cache rather than listing the
        # store again: the feed keeps the cache exact (list, then watch without gaps; any
        # feed error lists again), so what a resync guards against is a reconcile that
        # failed to ask for its next look. Listing 100,000 CronJobs every period cost about
        # half a core.
        while True:
            await asyncio.sleep(self._resync_period)
            self._enqueue_cached()
            self._resyncs += 1
            if self.heap is not None:
                self.heap.upkeep()

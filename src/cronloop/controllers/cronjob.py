"""The CronJob controller: turns due scheduled times into Jobs, exactly once each.

A level-triggered reconciler keyed by CronJob name (driven by a
:class:`~cronloop.sync.Controller`; the work queue never runs one CronJob twice at once). Each
reconcile re-reads the CronJob and its runs and:

1. asks :func:`cronloop.api.plan_for_cronjob` which due times to start and which to skip;
2. applies admission (an overloaded host delays AtLeastOnce runs and skips AtMostOnce ones)
   and the concurrency policy (Allow, Forbid, Replace) to each time to start;
3. creates the runs and the skip records in one transaction, each with the unique key
   ``<cronjob uid>@<scheduled time>``, so a run can never be created twice, even by a second
   scheduler or by this one replaying after a crash;
4. only then moves ``status.lastScheduleTime`` forward (compare-and-set). A crash between 3
   and 4 replays the same plan, finds the runs already there, and creates nothing new;
5. prunes finished runs beyond the history limits, and asks to be woken at the next time.

Every skipped, missed or suppressed time is recorded: listed ones as Jobs in phase Skipped
with their reason, and all of them in the CronJob's counters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from cronloop.api import (
    ConcurrencyPolicy,
    CronJob,
    Guarantee,
    Job,
    JobSpec,
    JobStatus,
    MissedRunPlan,
    ObjectMeta,
    ObjectRef,
    Phase,
    PhaseCounts,
    SkipReason,
    plan_for_cronjob,
    run_name,
)
from cronloop.controllers.admission import AdmissionController, Delay, Skip
from cronloop.controllers.cache import CachedStore
from cronloop.controllers.clock import Clock, monotonic
from cronloop.controllers.objects import (
    CRONJOB_LABEL,
    replacing,
    run_unique_key,
    to_stored,
    typed,
)
from cronloop.store import AlreadyExists, Conflict, NotFound, StoredObject, new_uid
from cronloop.sync import Result

__all__ = [
    "CANCEL_ANNOTATION",
    "GUARANTEE_ANNOTATION",
    "SKIPPED_HISTORY_LIMIT",
    "CronJobController",
    "FanOutPlan",
    "RunStarter",
    "job_phase",
]

logger = logging.getLogger(__name__)

#: Annotation on a Job naming its CronJob's guarantee (AtMostOnce runs are never restarted).
GUARANTEE_ANNOTATION = "cronloop.dev/guarantee"
#: Annotation asking the Job controller to cancel a run; its value is the reason.
CANCEL_ANNOTATION = "cronloop.dev/cancel-requested"
#: Skip records kept per CronJob (their counts live on in the CronJob's status).
SKIPPED_HISTORY_LIMIT = 10
#: How soon a run waiting behind a Forbid policy or an overloaded host looks again at the
#: latest, in case no event wakes it first.
_WAIT_RECHECK_SECONDS = 5.0

_CAS_TRIES = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAILED_PHASES = frozenset({Phase.FAILED, Phase.TIMED_OUT, Phase.LOST, Phase.CANCELLED})


def _template(cronjob: CronJob) -> JobSpec:
    """The CronJob's job template, with the CronJob's expected duration if it has none."""
    template = cronjob.spec.job_template
    expected = cronjob.spec.expected_duration_seconds
    if expected is not None and template.expected_duration_seconds is None:
        return template.model_copy(update={"expected_duration_seconds": expected})
    return template


def _cursor(created: datetime, last_schedule_time: datetime | None) -> datetime:
    """Where planning resumes: the later of creation and the last handled time (as the
    planner itself computes it)."""
    return created if last_schedule_time is None else max(created, last_schedule_time)


def job_phase(obj: StoredObject) -> Phase:
    """The phase recorded in a stored Job's status (Pending when unset)."""
    return Phase(obj.status.get("phase", Phase.PENDING.value))


@dataclass(frozen=True)
class FanOutPlan:
    """A run's sub-jobs, ready to be created right after the run in its transaction."""

    #: The SubJobs, each with its first attempt recorded and a uid of its own.
    objects: list[StoredObject]
    #: How to start each first attempt once created (the Job controller's own business).
    starts: tuple[object, ...]


class RunStarter(Protocol):
    """Fans a new run out and starts it (the Job controller), so that a run, its sub-jobs
    and their first attempts are created in one transaction and started right after it."""

    def plan_fan_out(self, obj: StoredObject, job: Job) -> FanOutPlan | None: ...

    async def start_planned(
        self, plan: FanOutPlan, run: StoredObject, created: Sequence[StoredObject]
    ) -> object: ...


@dataclass
class _Outcome:
    """What one reconcile decided, before it is written."""

    creates: list[StoredObject] = field(default_factory=list)
    cancels: list[StoredObject] = field(default_factory=list)
    started: int = 0
    skipped: int = 0
    missed: int = 0
    cursor: datetime | None = None
    waiting_for: float | None = None


class CronJobController:
    """Reconciles CronJobs: creates their runs on schedule (see the module docstring)."""

    def __init__(
        self,
        store: CachedStore,
        *,
        clock: Clock,
        admission: AdmissionController | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._admission = admission
        #: Set by the manager: creates runs with their sub-jobs and starts them at once. Without
        #: it, a run's Job controller fans it out after seeing it in the change feed.
        self.starter: RunStarter | None = None
        #: The resource version each CronJob had when its last reconcile finished (its own
        #: status write included). Such a CronJob has nothing new to look at: its next time is
        #: already waiting on the delaying queue, so the manager need not enqueue it again for
        #: a resync or for the change event of that very write.
        self.observed: dict[str, int] = {}
        #: Job name -> revision of the runs this controller created or pruned itself: their
        #: change events need not wake the CronJob (the pass that wrote them decided).
        self.own_runs: dict[str, int] = {}
        #: name -> (uid, generation, cursor, next time): the next scheduled time after the
        #: cursor, as last planned. Until it comes, nothing is due and the plan is known
        #: without evaluating the schedule again (see :meth:`_plan`).
        self._next_times: dict[str, tuple[str, int, datetime, datetime]] = {}

    async def reconcile(self, name: str) -> Result | None:
        try:
            obj = await self._store.get("CronJob", name)
        except NotFound:
            if self._admission is not None:
                self._admission.forget(name)
            self.observed.pop(name, None)
            self._next_times.pop(name, None)
            return None
        self.observed.pop(name, None)  # until this pass has finished
        cronjob = self._store.typed(obj, CronJob)
        now = self._clock.now()
        runs = await self._store.owned("Job", obj.uid)
        plan = self._plan(obj, cronjob, now)
        outcome = self._decide(obj, cronjob, plan.start, runs)
        for skipped in plan.skipped:
            outcome.creates.append(
                self._skip_record(
                    obj,
                    cronjob,
                    skipped.scheduled_time,
                    skipped.reason.value,
                    f"scheduled time skipped: {skipped.reason.value}",
                )
            )
        if outcome.waiting_for is None:
            outcome.cursor = plan.last_considered
        elif plan.skipped:
            # Skipped times are all older than the first time to start, so they are settled
            # even while that one waits.
            newest_skip = plan.skipped[-1].scheduled_time
            outcome.cursor = max(outcome.cursor or newest_skip, newest_skip)
        # Counters move with the cursor, in the same compare-and-set as the cursor: if a later
        # write of this pass fails, the retry counts the same times again against the same
        # old cursor, so every due time is counted exactly once. Each handled time is counted
        # by what is stored for it (a replay after a crash finds its earlier decision).
        existing = {run.unique_key: run for run in runs}
        fresh = [c for c in outcome.creates if c.unique_key not in existing]
        for record in outcome.creates:
            actual = existing.get(record.unique_key, record)
            if job_phase(actual) is Phase.SKIPPED:
                if actual.status.get("reason") == SkipReason.MISSED_DEADLINE.value:
                    outcome.missed += 1
                else:
                    outcome.skipped += 1
            else:
                outcome.started += 1
        unlisted = plan.unlisted_skipped
        unlisted_missed = plan.skipped_counts.get(SkipReason.MISSED_DEADLINE, 0) - sum(
            1 for s in plan.skipped if s.reason is SkipReason.MISSED_DEADLINE
        )
        outcome.missed += unlisted_missed
        outcome.skipped += unlisted - unlisted_missed
        created = await self._create_runs(fresh)
        for run in outcome.cancels:
            await self._request_cancel(run, "ReplacedByNewRun")
        runs = [*runs, *created]
        version, cursor = await self._write_status(obj, cronjob, outcome, runs)
        await self._prune(cronjob, runs)
        self.observed[name] = version
        born = cronjob.metadata.creation_timestamp
        if outcome.waiting_for is None and plan.next_wake is not None and born is not None:
            # Everything due up to now is settled, so the next time after the new cursor is
            # the plan's next wake.
            self._next_times[name] = (
                obj.uid,
                obj.generation,
                _cursor(born, cursor),
                plan.next_wake,
            )
        return Result(requeue_after=self._next_delay(plan.next_wake, now, outcome.waiting_for))

    # ---- deciding ---------------------------------------------------------------------------

    def _plan(self, obj: StoredObject, cronjob: CronJob, now: datetime) -> MissedRunPlan:
        """:func:`plan_for_cronjob`, answered from memory while nothing can be due.

        Evaluating a cron expression was the largest cost of a reconcile, and most reconciles
        (a run finished, a resync) come between two scheduled times. If the spec (generation)
        and the cursor are those of the last plan and its next time has not come, no time in
        ``(cursor, now]`` is due and the next wake is that time: exactly what the planner
        would return.
        """
        created = cronjob.metadata.creation_timestamp
        memo = self._next_times.get(obj.name)
        if memo is not None and created is not None:
            cursor = _cursor(created, cronjob.status.last_schedule_time)
            if memo[:3] == (obj.uid, obj.generation, cursor) and now < memo[3]:
                return MissedRunPlan((), (), due_count=0, next_wake=memo[3])
        return plan_for_cronjob(cronjob, now)

    def _decide(
        self,
        obj: StoredObject,
        cronjob: CronJob,
        due: Sequence[datetime],
        runs: Sequence[StoredObject],
    ) -> _Outcome:
        outcome = _Outcome()
        spec = cronjob.spec
        active = [r for r in runs if not job_phase(r).terminal]
        for scheduled in due:
            if self._admission is not None:
                decision = self._admission.decide(
                    spec.guarantee.value, key=cronjob.metadata.name, now=monotonic()
                )
                if isinstance(decision, Delay):
                    outcome.waiting_for = decision.retry_after
                    break
                if isinstance(decision, Skip):
                    outcome.creates.append(
                        self._skip_record(
                            obj, cronjob, scheduled, "HostOverloaded", decision.reason
                        )
                    )
                    outcome.cursor = scheduled
                    continue
            if active and spec.concurrency_policy is ConcurrencyPolicy.FORBID:
                if spec.guarantee is Guarantee.AT_LEAST_ONCE:
                    # The run must still happen: wait for the active one to finish. A finished
                    # run wakes this CronJob through the change feed; the deadline (if any) is
                    # enforced by the planner on a later pass.
                    outcome.waiting_for = _WAIT_RECHECK_SECONDS
                    break
                outcome.creates.append(
                    self._skip_record(
                        obj,
                        cronjob,
                        scheduled,
                        "ConcurrencyForbidden",
                        f"run {active[0].name} was still active",
                    )
                )
                outcome.cursor = scheduled
                continue
            if active and spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
                outcome.cancels.extend(active)
                active = []
            run = self._run(obj, cronjob, scheduled)
            outcome.creates.append(run)
            active.append(run)
            outcome.cursor = scheduled
        return outcome

    def _run(self, obj: StoredObject, cronjob: CronJob, scheduled: datetime) -> StoredObject:
        """The Job for ``scheduled``, ready to create.

        It starts now, with every target pending: the status its Job controller would
        otherwise write right after the fan-out, one write per run saved.
        """
        status = JobStatus(start_time=self._clock.now())
        with contextlib.suppress(ValueError):  # selector targets: counted at fan-out
            pending = len(cronjob.spec.job_template.targets.resolve())
            status = status.model_copy(update={"counts": PhaseCounts(pending=pending)})
        return self._record(obj, cronjob, scheduled, status)

    def _skip_record(
        self, obj: StoredObject, cronjob: CronJob, scheduled: datetime, reason: str, message: str
    ) -> StoredObject:
        """A Job in phase Skipped recording why ``scheduled`` did not run."""
        status = JobStatus(phase=Phase.SKIPPED, reason=reason, message=message)
        return self._record(obj, cronjob, scheduled, status)

    @staticmethod
    def _record(
        obj: StoredObject, cronjob: CronJob, scheduled: datetime, status: JobStatus
    ) -> StoredObject:
        name = cronjob.metadata.name
        job = Job(
            metadata=ObjectMeta(
                name=run_name(name, scheduled),
                labels={CRONJOB_LABEL: name},
                annotations={GUARANTEE_ANNOTATION: cronjob.spec.guarantee.value},
            ),
            spec=_template(cronjob),
            status=status.model_copy(
                update={
                    "scheduled_time": scheduled,
                    "cron_job": ObjectRef(name=name, uid=obj.uid),
                }
            ),
        )
        return to_stored(job, owner_uid=obj.uid, unique_key=run_unique_key(obj.uid, scheduled))

    # ---- writing ----------------------------------------------------------------------------

    async def _create_runs(self, creates: list[StoredObject]) -> list[StoredObject]:
        """Create runs and skip records in one transaction; with a starter, each run's
        sub-jobs and first attempts too, started once that transaction is committed."""
        if not creates:
            return []
        batch, plans = self._with_fan_outs(creates)
        try:
            stored = await self._store.create_many(batch, keep_uids=True)
        except AlreadyExists:
            # Another writer created some of them between our read and this write: create the
            # rest one by one (their Job controller fans them out); a clash now means that run
            # exists, which is what we want.
            created = []
            for run in creates:
                try:
                    created.append(await self._store.create(run))
                except AlreadyExists:
                    logger.info("run %s already exists; not creating it again", run.name)
            return created
        runs = [obj for obj in stored if obj.kind == "Job"]
        for run in runs:
            self.own_runs[run.name] = run.resource_version
        if self.starter is not None:
            position = 0
            for plan in plans:
                run = stored[position]
                position += 1
                if plan is not None:
                    subjobs = stored[position : position + len(plan.objects)]
                    position += len(plan.objects)
                    await self.starter.start_planned(plan, run, subjobs)
        return runs

    def _with_fan_outs(
        self, creates: list[StoredObject]
    ) -> tuple[list[StoredObject], list[FanOutPlan | None]]:
        """The objects to create (each run followed by its sub-jobs), all with uids, and
        each run's plan (None for skip records and runs fanned out later)."""
        batch: list[StoredObject] = []
        plans: list[FanOutPlan | None] = []
        for obj in creates:
            run = dataclasses.replace(obj, uid=new_uid())
            plan = None
            if self.starter is not None and job_phase(run) is not Phase.SKIPPED:
                plan = self.starter.plan_fan_out(run, typed(run, Job))
            batch.append(run)
            plans.append(plan)
            if plan is not None:
                batch.extend(plan.objects)
        return batch, plans

    async def _request_cancel(self, run: StoredObject, reason: str) -> None:
        """Ask the Job controller to cancel ``run`` (an annotation; compare-and-set, retried)."""
        for _ in range(_CAS_TRIES):
            try:
                current = await self._store.get("Job", run.name)
            except NotFound:
                return
            job = self._store.typed(current, Job)
            if job.status.phase.terminal or CANCEL_ANNOTATION in job.metadata.annotations:
                return
            annotations = {**job.metadata.annotations, CANCEL_ANNOTATION: reason}
            updated = job.model_copy(
                update={"metadata": job.metadata.model_copy(update={"annotations": annotations})}
            )
            try:
                await self._store.update(replacing(current, updated))
                return
            except Conflict:
                continue  # the Job controller wrote its status meanwhile: read again
        raise RuntimeError(f"could not request the cancellation of {run.ref}")

    async def _write_status(
        self, obj: StoredObject, cronjob: CronJob, outcome: _Outcome, runs: list[StoredObject]
    ) -> tuple[int, datetime | None]:
        """Write the new status if it changed; returns the CronJob's resource version and its
        last schedule time."""
        active = tuple(ObjectRef(name=r.name, uid=r.uid) for r in runs if not job_phase(r).terminal)
        succeeded = [
            self._store.typed(r, Job).status.scheduled_time
            for r in runs
            if job_phase(r) is Phase.SUCCEEDED
        ]
        last_success = max((t for t in succeeded if t is not None), default=None)
        status = cronjob.status
        cursor = outcome.cursor or status.last_schedule_time
        if status.last_schedule_time is not None and cursor is not None:
            cursor = max(cursor, status.last_schedule_time)
        new = status.model_copy(
            update={
                "last_schedule_time": cursor,
                "last_successful_time": last_success or status.last_successful_time,
                "active": active,
                "started_runs": status.started_runs + outcome.started,
                "skipped_runs": status.skipped_runs + outcome.skipped,
                "missed_runs": status.missed_runs + outcome.missed,
            }
        )
        if new == status:
            return obj.resource_version, cursor
        updated = cronjob.model_copy(update={"status": new})
        stored = await self._store.write_status(obj, updated)
        return stored.resource_version, cursor

    async def _prune(self, cronjob: CronJob, runs: list[StoredObject]) -> None:
        spec = cronjob.spec
        groups: dict[str, list[StoredObject]] = {"ok": [], "failed": [], "skipped": []}
        for run in runs:
            phase = job_phase(run)
            if phase is Phase.SUCCEEDED:
                groups["ok"].append(run)
            elif phase is Phase.SKIPPED:
                groups["skipped"].append(run)
            elif phase in _FAILED_PHASES:
                groups["failed"].append(run)
        limits = {
            "ok": spec.successful_jobs_history_limit,
            "failed": spec.failed_jobs_history_limit,
            "skipped": SKIPPED_HISTORY_LIMIT,
        }
        for group, members in groups.items():
            # Oldest first by creation: a run triggered by hand has no scheduled time and
            # must not count as the oldest (it was pruned right after it finished).
            members.sort(
                key=lambda r: (r.created_at or _EPOCH, r.status.get("scheduledTime") or "", r.name)
            )
            for old in members[: max(0, len(members) - limits[group])]:
                with contextlib.suppress(NotFound):
                    deleted = await self._store.delete("Job", old.name)
                    self.own_runs[deleted.name] = deleted.resource_version

    @staticmethod
    def _next_delay(next_wake: datetime | None, now: datetime, waiting: float | None) -> float:
        delays = [waiting] if waiting is not None else []
        if next_wake is not None:
            delays.append(max(0.0, (next_wake - now).total_seconds()))
        # A CronJob with no next time (it cannot happen for valid schedules) is still looked
        # at once an hour, so a clock jump can never strand it.
        return min(delays, default=3600.0)

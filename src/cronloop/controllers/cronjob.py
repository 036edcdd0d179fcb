"""The CronJob controller: turns due scheduled times into Jobs, exactly once each.

A level-triggered reconciler keyed by CronJob name (driven by a
:class:`~cronloop.sync.Controller`; the work queue never runs one CronJob twice at once). Each
pass re-reads the CronJob and its runs from the controllers' cache and:

1. asks :func:`cronloop.api.plan_for_cronjob` which due times to start and which to skip
   (answered from memory in the common cases, see :meth:`CronJobController._plan`);
2. applies admission (an overloaded host delays AtLeastOnce runs and skips AtMostOnce ones)
   and the concurrency policy (Allow, Forbid, Replace) to each time to start;
3. records, in one transaction: the runs (with their sub-jobs and first attempts) and the
   skip records, each with the unique key ``<cronjob uid>@<scheduled time>`` so that a run can
   never be created twice, even by a second scheduler or by this one replaying after a crash;
   the CronJob's new status, ``lastScheduleTime`` moved forward (compare-and-set); cancel
   requests for runs a Replace policy supersedes; finished runs beyond the history limits;
4. only after that commit hands the new runs' first attempts to their runtimes, and asks to be
   woken at the next scheduled time.

CronJobs that are ready together (all the CronJobs due in the same second, say) are passed in
one batch and committed in one transaction; if that fails, each pass is committed on its own,
so one CronJob's conflict retries only that CronJob.

Every skipped, missed or suppressed time is recorded: listed ones as Jobs in phase Skipped
with their reason, and all of them in the CronJob's counters.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from cronloop.api import (
    CatchUp,
    ConcurrencyPolicy,
    CronJob,
    CronJobStatus,
    Guarantee,
    Job,
    JobStatus,
    MissedRunPlan,
    ObjectRef,
    Phase,
    PhaseCounts,
    Schedule,
    SkipReason,
    plan_for_cronjob,
    run_name,
)
from cronloop.controllers.admission import AdmissionController, Delay, Skip
from cronloop.controllers.cache import CachedStore
from cronloop.controllers.clock import Clock, monotonic
from cronloop.controllers.fanout import FanOutPlan, FanOutTemplate
from cronloop.controllers.objects import (
    ANNOTATIONS_KEY,
    CRONJOB_LABEL,
    dump_model,
    json_time,
    replacing,
    run_unique_key,
    typed,
)
from cronloop.controllers.runstatus import CronJobStatusRecord, parse_time, with_fields
from cronloop.store import (
    AlreadyExists,
    Batch,
    BatchResult,
    NotFound,
    StoredObject,
    new_uid,
)
from cronloop.sync import Result

__all__ = [
    "CANCEL_ANNOTATION",
    "GUARANTEE_ANNOTATION",
    "PREPARE_AHEAD",
    "SKIPPED_HISTORY_LIMIT",
    "CronJobController",
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
#: CronJob versions whose run template is kept (a few KB each); a CronJob beyond them is
#: compiled again when it next fires, which is only slower.
_COMPILED_LIMIT = 16_384
#: A CronJob's next run is made (all but its start time: the Job, its sub-jobs with their
#: first attempts, their uids and sessions) this many seconds ahead of its scheduled time, by
#: a pass the CronJob is woken for then, so that at the scheduled time a pass only stamps it
#: and commits it (see ``CronJobController._prepare``).
PREPARE_AHEAD = 10.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAILED_PHASES = frozenset({Phase.FAILED, Phase.TIMED_OUT, Phase.LOST, Phase.CANCELLED})
_CRONJOB_STATUS = dump_model(CronJobStatus())


_PHASES = {phase.value: phase for phase in Phase}


def job_phase(obj: StoredObject) -> Phase:
    """The phase recorded in a stored Job's status (Pending when unset)."""
    value = obj.status.get("phase", Phase.PENDING.value)
    return _PHASES.get(value) or Phase(value)  # the enum call only to raise on a bad value


def _scheduled_time(obj: StoredObject) -> datetime | None:
    text = obj.status.get("scheduledTime")
    return datetime.fromisoformat(text) if isinstance(text, str) else None


def _cursor(created: datetime, last_schedule_time: datetime | None) -> datetime:
    """Where planning resumes: the later of creation and the last handled time (as the
    planner itself computes it)."""
    return created if last_schedule_time is None else max(created, last_schedule_time)


class RunStarter(Protocol):
    """Where new runs go (the Job controller): it fans a run out and starts it, so that a run,
    its sub-jobs and their first attempts are created in one transaction and started right
    after it; a run it cannot fan out yet, or one asked to cancel, is handed to it by name."""

    def prepare(self, template: FanOutTemplate, run: StoredObject) -> FanOutPlan:
        """The fan-out of ``run`` (whose name, uid and spec are set), made ahead of it: its
        attempts count as recorded only once it is passed to :meth:`fan_out`."""
        ...

    def fan_out(
        self, template: FanOutTemplate, run: StoredObject, prepared: FanOutPlan | None = None
    ) -> FanOutPlan:
        """The fan-out of ``run`` about to be committed: ``prepared`` if it was made ahead
        for this run by :meth:`prepare`."""
        ...

    async def start_planned(
        self, runs: Sequence[tuple[FanOutPlan, StoredObject, Sequence[StoredObject]]]
    ) -> None: ...

    def hand_over(self, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class _RunTemplate:
    """What every run of one CronJob version is filled in from."""

    #: The stored spec of its runs (the job template, annotations included).
    job_spec: dict[str, Any]
    #: Its runs' sub-jobs, or None for targets known only at run time (a selector).
    fan_out: FanOutTemplate | None
    #: The stored status of a new run, but for its start and scheduled times.
    run_status: dict[str, Any]


@dataclass(slots=True, eq=False)
class _Compiled:
    """What passes need from one version (uid, generation) of a CronJob, worked out once.

    The run template is made at the first run (``runs()``): most passes only plan, and at
    start-up every CronJob gets a pass, so making templates eagerly cost 100,000 CronJobs
    time and memory for runs that were hours away.
    """

    cronjob: CronJob
    schedule: Schedule
    created: datetime
    _runs: _RunTemplate | None = None
    #: The next run, made ahead of its time (see :data:`PREPARE_AHEAD`).
    prepared: _PreparedRun | None = None

    def take_prepared(self, scheduled: datetime) -> _PreparedRun | None:
        """The run made ahead for ``scheduled``, if that is the one made; used once (a pass
        whose commit fails makes its retry's run afresh)."""
        prepared = self.prepared
        if prepared is None or prepared.scheduled != scheduled:
            return None
        self.prepared = None
        return prepared

    def runs(self) -> _RunTemplate:
        template = self._runs
        if template is None:
            template = self._runs = _run_template(self.cronjob)
        return template


def _run_template(cronjob: CronJob) -> _RunTemplate:
    spec = cronjob.spec
    template = spec.job_template
    if spec.expected_duration_seconds is not None and template.expected_duration_seconds is None:
        template = template.model_copy(
            update={"expected_duration_seconds": spec.expected_duration_seconds}
        )
    job_spec = dump_model(template)
    fan_out = FanOutTemplate.of(template, job_spec)
    job_spec[ANNOTATIONS_KEY] = {GUARANTEE_ANNOTATION: spec.guarantee.value}
    # A new run's status, as JobStatus(counts=..., cron_job=...) dumps it, from a dump kept
    # per target count: one model per CronJob cost more than the rest of its one-shot run.
    run_status = dict(_new_run_status(template.targets.count))
    warnings = run_status.pop("warnings")
    run_status["cronJob"] = {"name": cronjob.metadata.name, "uid": cronjob.metadata.uid}
    run_status["warnings"] = warnings
    # fan_out is None for a selector: the run's Job controller fails it at fan-out.
    return _RunTemplate(job_spec, fan_out, run_status)


@functools.lru_cache(maxsize=256)
def _new_run_status(pending: int | None) -> dict[str, Any]:
    """The stored status of a new run with ``pending`` targets (None: known at run time), but
    for its CronJob; shared, so never changed in place."""
    counts = PhaseCounts() if pending is None else PhaseCounts(pending=pending)
    return dump_model(JobStatus(counts=counts))


@dataclass(frozen=True, slots=True)
class _PreparedRun:
    """A run made ahead of its scheduled time: its identity and fan-out (a run's status, its
    start time above all, is filled in when it starts)."""

    scheduled: datetime
    uid: str
    #: None for a selector's run: its Job controller fails it at fan-out.
    plan: FanOutPlan | None


@dataclass(slots=True, eq=False)
class _Pass:
    """What one pass over one CronJob decided, before it is committed."""

    obj: StoredObject
    compiled: _Compiled
    status: CronJobStatusRecord
    plan: MissedRunPlan
    runs: list[StoredObject]
    creates: list[StoredObject] = field(default_factory=list)
    #: The fan-out of each new run, by the run's uid.
    fan_outs: dict[str, FanOutPlan] = field(default_factory=dict)
    cancels: list[StoredObject] = field(default_factory=list)
    #: Runs the Job controller must look at once committed (not started here, or cancelled).
    hand_over: list[str] = field(default_factory=list)
    prunes: list[tuple[str, str]] = field(default_factory=list)
    new_status: CronJobStatusRecord | None = None
    cursor: datetime | None = None
    waiting_for: float | None = None
    started: int = 0
    skipped: int = 0
    missed: int = 0

    @property
    def name(self) -> str:
        return self.obj.name

    def batch(self) -> Batch:
        status = []
        if self.new_status is not None:
            new = cast(dict[str, Any], self.new_status)
            status.append(self.obj.with_status(new))
        return Batch(
            creates=self.creates,
            updates=self.cancels,
            status_updates=status,
            deletes=self.prunes,
            keep_uids=True,
        )


class CronJobController:
    """Reconciles CronJobs: creates their runs on schedule (see the module docstring)."""

    def __init__(
        self,
        store: CachedStore,
        *,
        clock: Clock,
        starter: RunStarter,
        admission: AdmissionController | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._admission = admission
        self._starter = starter
        #: The resource version each CronJob had when its last pass finished (its own status
        #: write included). Such a CronJob has nothing new to look at: its next time is already
        #: waiting on the delaying queue, so the manager need not enqueue it again for a resync
        #: or for the change event of that very write.
        self.observed: dict[str, int] = {}
        #: name -> (uid, generation, cursor, next time): the next scheduled time after the
        #: cursor, as last planned, None when there is none (see :meth:`_plan`).
        self._next_times: dict[str, tuple[str, int, datetime, datetime | None]] = {}
        self._compiled: OrderedDict[tuple[str, int], _Compiled] = OrderedDict()

    async def reconcile(self, name: str) -> Result | None:
        outcome = (await self.reconcile_batch([name]))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def reconcile_batch(self, names: Sequence[str]) -> list[Result | Exception | None]:
        """One pass per CronJob, all committed in one transaction (see the module docstring)."""
        now = self._clock.now()
        outcomes: list[Result | Exception | None] = []
        passes: list[tuple[int, _Pass]] = []
        for name in names:
            try:
                cron_pass = await self._pass(name, now)
            except Exception as exc:
                outcomes.append(exc)
                continue
            outcomes.append(None)
            if cron_pass is not None:
                passes.append((len(outcomes) - 1, cron_pass))
        results = await self._commit([p for _, p in passes])
        starts: list[tuple[FanOutPlan, StoredObject, Sequence[StoredObject]]] = []
        for (index, cron_pass), result in zip(passes, results, strict=True):
            if isinstance(result, Exception):
                outcomes[index] = result
                continue
            starts.extend(self._fan_outs(cron_pass, result))
            outcomes[index] = self._committed(cron_pass, result, now)
        for _, cron_pass in passes:
            for name in cron_pass.hand_over:
                self._starter.hand_over(name)
        if starts:
            await self._starter.start_planned(starts)
        # After the starts: what is made ahead must not hold up what is due now.
        for (_, cron_pass), result in zip(passes, results, strict=True):
            if not isinstance(result, Exception):
                self._prepare(cron_pass, now)
        return outcomes

    # ---- one pass ---------------------------------------------------------------------------

    async def _pass(self, name: str, now: datetime) -> _Pass | None:
        try:
            obj = await self._store.get("CronJob", name)
        except NotFound:
            if self._admission is not None:
                self._admission.forget(name)
            self.observed.pop(name, None)
            self._next_times.pop(name, None)
            return None
        self.observed.pop(name, None)  # until this pass has committed
        compiled = self._compile(obj)
        status = cast(CronJobStatusRecord, obj.status)
        runs = await self._store.owned("Job", obj.uid)
        cron_pass = _Pass(
            obj=obj,
            compiled=compiled,
            status=status,
            plan=self._plan(obj, compiled, status, now),
            runs=runs,
        )
        self._decide(cron_pass, now)
        plan = cron_pass.plan
        for skipped in plan.skipped:
            cron_pass.creates.append(
                self._skip_record(
                    cron_pass,
                    skipped.scheduled_time,
                    skipped.reason.value,
                    f"scheduled time skipped: {skipped.reason.value}",
                )
            )
        if cron_pass.waiting_for is None:
            cron_pass.cursor = plan.last_considered
        elif plan.skipped:
            # Skipped times are all older than the first time to start, so they are settled
            # even while that one waits.
            newest_skip = plan.skipped[-1].scheduled_time
            cron_pass.cursor = max(cron_pass.cursor or newest_skip, newest_skip)
        self._count(cron_pass)
        self._prune(cron_pass)
        cron_pass.new_status = self._new_status(cron_pass)
        return cron_pass

    def _compile(self, obj: StoredObject) -> _Compiled:
        key = (obj.uid, obj.generation)
        found = self._compiled.get(key)
        if found is not None:
            self._compiled.move_to_end(key)
            return found
        cronjob = typed(obj, CronJob)
        created = cronjob.metadata.creation_timestamp or self._clock.now()
        compiled = _Compiled(
            cronjob=cronjob,
            schedule=cronjob.spec.parsed_schedule(anchor=created),
            created=created,
        )
        self._compiled[key] = compiled
        while len(self._compiled) > _COMPILED_LIMIT:
            self._compiled.popitem(last=False)
        return compiled

    def _plan(
        self, obj: StoredObject, compiled: _Compiled, status: CronJobStatusRecord, now: datetime
    ) -> MissedRunPlan:
        """:func:`plan_for_cronjob`, answered from memory in the two common cases.

        Evaluating the schedule was the largest cost of a pass. The memo holds the next
        scheduled time after the cursor as of the last plan (for the same spec and cursor):

        - before that time nothing is due, and the next wake is that time;
        - from that time until the one after it, exactly that time is due, and it starts if
          it is on time by every rule the planner applies (not suspended, inside the catch-up
          window and, under ``catchUp: None``, within the misfire threshold).

        Anything else (the first pass, a changed spec, a late or missed time) goes to the
        planner. A property test checks both shortcuts against it.
        """
        cursor = _cursor(compiled.created, parse_time(status.get("lastScheduleTime")))
        memo = self._next_times.get(obj.name)
        if memo is None or memo[:3] != (obj.uid, obj.generation, cursor):
            return self._planner(compiled, status, now)
        due = memo[3]
        if due is None or now < due:  # None: a one-shot schedule that has fired
            return MissedRunPlan((), (), due_count=0, next_wake=due)
        spec = compiled.cronjob.spec
        late = now - due
        threshold = timedelta(seconds=spec.misfire_threshold_seconds)
        if spec.starting_deadline_seconds is not None:
            window: timedelta | None = timedelta(seconds=spec.starting_deadline_seconds)
        elif spec.guarantee is Guarantee.AT_MOST_ONCE:
            window = threshold
        else:
            window = None
        following = compiled.schedule.next_after(due)
        on_time = (window is None or late <= window) and (
            spec.catch_up is not CatchUp.NONE or late <= threshold
        )
        if spec.suspend or not on_time or (following is not None and following <= now):
            return self._planner(compiled, status, now)
        return MissedRunPlan((due,), (), due_count=1, last_considered=due, next_wake=following)

    @staticmethod
    def _planner(compiled: _Compiled, status: CronJobStatusRecord, now: datetime) -> MissedRunPlan:
        """:func:`plan_for_cronjob` on the stored status."""
        model = CronJobStatus.model_validate(status)
        return plan_for_cronjob(compiled.cronjob, now, status=model, schedule=compiled.schedule)

    def _decide(self, cron_pass: _Pass, now: datetime) -> None:
        spec = cron_pass.compiled.cronjob.spec
        active = [r for r in cron_pass.runs if not job_phase(r).terminal]
        for scheduled in cron_pass.plan.start:
            if self._admission is not None:
                decision = self._admission.decide(
                    spec.guarantee.value, key=cron_pass.name, now=monotonic()
                )
                if isinstance(decision, Delay):
                    cron_pass.waiting_for = decision.retry_after
                    break
                if isinstance(decision, Skip):
                    cron_pass.creates.append(
                        self._skip_record(cron_pass, scheduled, "HostOverloaded", decision.reason)
                    )
                    cron_pass.cursor = scheduled
                    continue
            if active and spec.concurrency_policy is ConcurrencyPolicy.FORBID:
                if spec.guarantee is Guarantee.AT_LEAST_ONCE:
                    # The run must still happen: wait for the active one to finish. A finished
                    # run wakes this CronJob through the change feed; the deadline (if any) is
                    # enforced by the planner on a later pass.
                    cron_pass.waiting_for = _WAIT_RECHECK_SECONDS
                    break
                cron_pass.creates.append(
                    self._skip_record(
                        cron_pass,
                        scheduled,
                        "ConcurrencyForbidden",
                        f"run {active[0].name} was still active",
                    )
                )
                cron_pass.cursor = scheduled
                continue
            if active and spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
                for run in active:
                    cancel = self._cancel_request(run, "ReplacedByNewRun")
                    if cancel is not None and all(c.name != run.name for c in cron_pass.cancels):
                        cron_pass.cancels.append(cancel)
                        cron_pass.hand_over.append(run.name)
                active = []
            run = self._run(cron_pass, scheduled, now)
            active.append(run)
            cron_pass.cursor = scheduled

    def _run(self, cron_pass: _Pass, scheduled: datetime, now: datetime) -> StoredObject:
        """The Job for ``scheduled``, with its sub-jobs when a starter will start it.

        It starts now, with every target pending: the status its Job controller would
        otherwise write right after the fan-out, one write per run saved.
        """
        compiled = cron_pass.compiled.runs()
        status = {
            **compiled.run_status,
            "startTime": json_time(now),
            "scheduledTime": json_time(scheduled),
        }
        prepared = cron_pass.compiled.take_prepared(scheduled)
        uid = new_uid() if prepared is None else prepared.uid
        run = self._stored_run(cron_pass, scheduled, status, uid)
        cron_pass.creates.append(run)
        if compiled.fan_out is None:
            cron_pass.hand_over.append(run.name)  # its Job controller fails it at fan-out
        else:
            plan = self._starter.fan_out(
                compiled.fan_out, run, None if prepared is None else prepared.plan
            )
            if plan.embedded is not None:
                status["subJob"] = plan.embedded  # still unshared: made just above
            cron_pass.fan_outs[run.uid] = plan
            cron_pass.creates.extend(plan.objects)
        return run

    def _prepare(self, cron_pass: _Pass, now: datetime) -> None:
        """Make the next run of a committed pass ahead of its time, if that is near (see
        :data:`PREPARE_AHEAD`): at its time, the pass that starts it only stamps its start.

        The run's fan-out needs only its name and uid, both known ahead (the name is the
        CronJob's and the scheduled time's), and making it at its time was most of what a
        burst's passes spent on each run. Its sessions count as recorded only once the run
        is committed (``RunStarter.fan_out``). A run made for a time that never starts (the
        CronJob suspended or changed meanwhile) is dropped unused: nothing of it was stored.
        """
        next_wake = cron_pass.plan.next_wake
        if cron_pass.waiting_for is not None or next_wake is None:
            return
        if (next_wake - now).total_seconds() > PREPARE_AHEAD:
            return
        compiled = cron_pass.compiled
        if compiled.prepared is not None and compiled.prepared.scheduled == next_wake:
            return
        template = compiled.runs()
        uid = new_uid()
        plan = None
        if template.fan_out is not None:
            run = self._stored_run(cron_pass, next_wake, {}, uid)
            plan = self._starter.prepare(template.fan_out, run)
        compiled.prepared = _PreparedRun(next_wake, uid, plan)

    def _skip_record(
        self, cron_pass: _Pass, scheduled: datetime, reason: str, message: str
    ) -> StoredObject:
        """A Job in phase Skipped recording why ``scheduled`` did not run."""
        name = cron_pass.name
        status = JobStatus(
            phase=Phase.SKIPPED,
            reason=reason,
            message=message,
            scheduled_time=scheduled,
            cron_job=ObjectRef(name=name, uid=cron_pass.obj.uid),
        )
        return self._stored_run(cron_pass, scheduled, dump_model(status), new_uid())

    @staticmethod
    def _stored_run(
        cron_pass: _Pass, scheduled: datetime, status: dict[str, Any], uid: str
    ) -> StoredObject:
        name = cron_pass.name
        owner = cron_pass.obj.uid
        return StoredObject(
            "Job",
            run_name(name, scheduled),
            spec=cron_pass.compiled.runs().job_spec,
            status=status,
            labels={CRONJOB_LABEL: name},
            owner_uid=owner,
            unique_key=run_unique_key(owner, scheduled),
            uid=uid,
        )

    def _cancel_request(self, run: StoredObject, reason: str) -> StoredObject | None:
        """The write asking the Job controller to cancel ``run`` (an annotation), or None if
        it has finished or was asked already."""
        if job_phase(run).terminal:
            return None
        annotations = dict(run.spec.get(ANNOTATIONS_KEY, {}))
        if CANCEL_ANNOTATION in annotations:
            return None
        job = typed(run, Job)
        annotations = {**job.metadata.annotations, CANCEL_ANNOTATION: reason}
        updated = job.model_copy(
            update={"metadata": job.metadata.model_copy(update={"annotations": annotations})}
        )
        return replacing(run, updated)

    def _count(self, cron_pass: _Pass) -> None:
        """Count every handled time once, by what is stored for it.

        Counters move with the cursor, in the same compare-and-set as the cursor: if the
        commit fails, the retry counts the same times again against the same old cursor, so
        every due time is counted exactly once. A replay after a crash finds its earlier
        decision stored, and creates nothing new for it.
        """
        existing = {run.unique_key: run for run in cron_pass.runs}
        for record in cron_pass.creates:
            if record.kind != "Job":
                continue  # a sub-job of a new run
            actual = existing.get(record.unique_key, record)
            if job_phase(actual) is Phase.SKIPPED:
                if actual.status.get("reason") == SkipReason.MISSED_DEADLINE.value:
                    cron_pass.missed += 1
                else:
                    cron_pass.skipped += 1
            else:
                cron_pass.started += 1
        plan = cron_pass.plan
        unlisted = plan.unlisted_skipped
        unlisted_missed = plan.skipped_counts.get(SkipReason.MISSED_DEADLINE, 0) - sum(
            1 for s in plan.skipped if s.reason is SkipReason.MISSED_DEADLINE
        )
        cron_pass.missed += unlisted_missed
        cron_pass.skipped += unlisted - unlisted_missed
        stored = {r.unique_key for r in cron_pass.runs}
        if any(r.kind == "Job" and r.unique_key in stored for r in cron_pass.creates):
            # A replay: the runs already stored are not created again (nor fanned out).
            self._drop_stored(cron_pass, stored)

    @staticmethod
    def _drop_stored(cron_pass: _Pass, stored: set[str | None]) -> None:
        keep: list[StoredObject] = []
        dropped: set[str] = set()
        for record in cron_pass.creates:
            if record.kind == "Job" and record.unique_key in stored:
                dropped.add(record.uid)
            elif record.owner_uid in dropped:
                continue
            else:
                keep.append(record)
        for uid in dropped:
            cron_pass.fan_outs.pop(uid, None)
        cron_pass.creates = keep

    def _new_status(self, cron_pass: _Pass) -> CronJobStatusRecord | None:
        """The CronJob's status after this pass, or None when it does not change."""
        new_runs = [r for r in cron_pass.creates if r.kind == "Job"]
        pruned = {name for _, name in cron_pass.prunes}
        runs = [r for r in cron_pass.runs if r.name not in pruned] + new_runs
        active = [{"name": r.name, "uid": r.uid} for r in runs if not job_phase(r).terminal]
        succeeded = [_scheduled_time(r) for r in runs if job_phase(r) is Phase.SUCCEEDED]
        last_success = max((t for t in succeeded if t is not None), default=None)
        # The stored status with the model's defaults, so that a status written elsewhere
        # without them (an applied CronJob has none) compares equal when nothing changed.
        status = cast(CronJobStatusRecord, {**_CRONJOB_STATUS, **cron_pass.status})
        last = parse_time(status.get("lastScheduleTime"))
        cursor = cron_pass.cursor or last
        if last is not None and cursor is not None:
            cursor = max(cursor, last)
        cron_pass.cursor = cursor
        previous_success = parse_time(status.get("lastSuccessfulTime"))
        if previous_success is not None:
            last_success = max(last_success or previous_success, previous_success)
        new = with_fields(
            status,
            lastScheduleTime=None if cursor is None else json_time(cursor),
            lastSuccessfulTime=None if last_success is None else json_time(last_success),
            active=active,
            startedRuns=status.get("startedRuns", 0) + cron_pass.started,
            skippedRuns=status.get("skippedRuns", 0) + cron_pass.skipped,
            missedRuns=status.get("missedRuns", 0) + cron_pass.missed,
        )
        return None if new == status else new

    def _prune(self, cron_pass: _Pass) -> None:
        """Finished runs beyond the history limits, oldest first, are deleted in the pass's
        transaction (never runs this pass creates: the next pass counts them)."""
        spec = cron_pass.compiled.cronjob.spec
        groups: dict[str, list[StoredObject]] = {"ok": [], "failed": [], "skipped": []}
        for run in cron_pass.runs:
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
            excess = len(members) - limits[group]
            if excess <= 0:
                continue
            # Oldest first by creation: a run triggered by hand has no scheduled time and
            # must not count as the oldest (it was pruned right after it finished).
            members.sort(
                key=lambda r: (r.created_at or _EPOCH, r.status.get("scheduledTime") or "", r.name)
            )
            cron_pass.prunes.extend(("Job", old.name) for old in members[:excess])

    # ---- committing ---------------------------------------------------------------------------

    async def _commit(self, passes: list[_Pass]) -> list[BatchResult | Exception]:
        """Commit every pass in one transaction, or each on its own if that fails."""
        batches = [p.batch() for p in passes]
        if not any(batches):
            return [BatchResult() for _ in passes]
        if len(passes) > 1:
            try:
                result = await self._store.commit(
                    Batch(
                        creates=[o for b in batches for o in b.creates],
                        updates=[o for b in batches for o in b.updates],
                        status_updates=[o for b in batches for o in b.status_updates],
                        deletes=[d for b in batches for d in b.deletes],
                        keep_uids=True,
                    )
                )
            except Exception:
                pass  # one stale pass fails them all: commit each on its own, below
            else:
                return _split(result, batches)
        singles = await asyncio.gather(
            *(self._commit_one(p, b) for p, b in zip(passes, batches, strict=True)),
            return_exceptions=True,
        )
        results: list[BatchResult | Exception] = []
        for single in singles:
            if not isinstance(single, BatchResult | Exception):
                raise single  # cancelled: not a failure of one pass
            results.append(single)
        return results

    async def _commit_one(self, cron_pass: _Pass, batch: Batch) -> BatchResult:
        if not batch:
            return BatchResult()
        try:
            return await self._store.commit(batch)
        except AlreadyExists:
            # Another scheduler created some of these runs since our cache saw the CronJob's
            # runs: read them, so the retry finds them stored and creates only the rest.
            for run in (await self._store.store.list("Job", owner_uid=cron_pass.obj.uid)).items:
                self._store.cache.observe(run)
            logger.info("runs of %s were created elsewhere meanwhile; retrying", cron_pass.obj.ref)
            raise

    @staticmethod
    def _fan_outs(
        cron_pass: _Pass, result: BatchResult
    ) -> list[tuple[FanOutPlan, StoredObject, Sequence[StoredObject]]]:
        """The new runs to start, each with its sub-jobs as stored."""
        starts: list[tuple[FanOutPlan, StoredObject, Sequence[StoredObject]]] = []
        created = result.created
        for index, run in enumerate(created):
            plan = cron_pass.fan_outs.get(run.uid)
            if plan is not None:
                starts.append((plan, run, created[index + 1 : index + 1 + len(plan.objects)]))
        return starts

    def _committed(self, cron_pass: _Pass, result: BatchResult, now: datetime) -> Result:
        obj = cron_pass.obj
        written = result.status_updated
        self.observed[obj.name] = written[0].resource_version if written else obj.resource_version
        plan = cron_pass.plan
        if cron_pass.waiting_for is None:
            # Everything due up to now is settled, so the next time after the new cursor is
            # the plan's next wake.
            cursor = _cursor(cron_pass.compiled.created, cron_pass.cursor)
            self._next_times[obj.name] = (obj.uid, obj.generation, cursor, plan.next_wake)
        return Result(requeue_after=self._next_delay(plan.next_wake, now, cron_pass.waiting_for))

    @staticmethod
    def _next_delay(next_wake: datetime | None, now: datetime, waiting: float | None) -> float:
        delays = [waiting] if waiting is not None else []
        if next_wake is not None:
            delay = (next_wake - now).total_seconds()
            if delay > PREPARE_AHEAD:
                delay -= PREPARE_AHEAD  # a pass then makes the run ahead (_prepare)
            delays.append(max(0.0, delay))
        # A CronJob with no next time (a one-shot schedule that has fired) is still looked
        # at once an hour, so a clock jump can never strand it.
        return min(delays, default=3600.0)


def _split(result: BatchResult, batches: Sequence[Batch]) -> list[BatchResult | Exception]:
    """Cut the result of a merged batch back into one result per batch (what was created and
    what was status-updated; deletions are not assigned back)."""
    out: list[BatchResult | Exception] = []
    created = updated = status = 0
    for batch in batches:
        out.append(
            BatchResult(
                created=result.created[created : created + len(batch.creates)],
                updated=result.updated[updated : updated + len(batch.updates)],
                status_updated=result.status_updated[status : status + len(batch.status_updates)],
            )
        )
        created += len(batch.creates)
        updated += len(batch.updates)
        status += len(batch.status_updates)
    return out

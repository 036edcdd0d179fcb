"""The Job controller: fans runs out into sub-jobs, starts attempts, keeps statuses in order.

Everything that changes a Job or its SubJobs happens in the job's own sync loop: a reconcile
keyed by the Job's name, driven by a work queue that never runs one job twice at once.

- **Reports** from runtimes are not written where they arrive: :meth:`JobController.on_report`
  appends them to the job's inbox and enqueues the job. Its next pass applies every report
  waiting for it, in arrival order, against the session id and sequence number stamped on
  the attempt (a stale report is dropped, a phase only moves forward: the seed-000 fix), so a
  job that starts and ends at once costs one write, not one per report.
- **A pass** (``reconcile``) reads the job and its sub-jobs from the controllers' cache and
  decides everything at once: sub-jobs to create (fan-out of 1,000 targets is one write),
  attempts to dispatch, retries due after their backoff, the job's deadline, a cancel
  request, the aggregate phase under the success policy, long-running warnings. The decision
  is then recorded in one store transaction, and only after it committed are attempts handed
  to their runtimes and running ones stopped.
- **Batches**: the work queue hands the controller every job that is ready (up to a bound),
  and their passes commit together in one transaction; if that fails (a stale read, say),
  each pass is committed on its own, so one job's conflict only retries that job.

Dispatch is a compare-and-set: the attempt (with a fresh session id) is recorded in the
sub-job's status before it is started, so two dispatchers cannot both start it and a crash
leaves a record of every attempt that may have started. After a crash,
:meth:`JobController.recover` settles attempts left running: the runtime reports them Lost
(never re-running them blindly); an AtLeastOnce run then gets a new attempt, an AtMostOnce run
does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cronloop.api import (
    Attempt,
    Guarantee,
    Job,
    JobStatus,
    ObjectRef,
    Phase,
    PhaseCounts,
    StepName,
    SubJob,
    SubJobStatus,
    aggregate_phase,
    can_advance,
)
from cronloop.controllers.cache import CachedStore
from cronloop.controllers.clock import Clock
from cronloop.controllers.cronjob import CANCEL_ANNOTATION, GUARANTEE_ANNOTATION
from cronloop.controllers.fanout import (
    AttemptStart,
    FanOutPlan,
    FanOutTemplate,
    attempt_start,
    parse_attempt_id,
    plan_fan_out,
    step_plan,
)
from cronloop.controllers.longrunning import LongRunningDetector
from cronloop.controllers.objects import CRONJOB_LABEL, assemble, dump_model
from cronloop.runtimes import (
    AttemptReport,
    AttemptSpec,
    Reason,
    RecoveryRecord,
    Runtime,
    UnknownAttemptError,
)
from cronloop.store import Batch, BatchResult, NotFound, StoredObject
from cronloop.sync import Result

__all__ = ["LOST_RETRY_LIMIT", "JobController"]

logger = logging.getLogger(__name__)

#: How many times an AtLeastOnce sub-job is restarted after its attempt was Lost (a crash or a
#: vanished runtime), on top of its retry budget for ordinary failures.
LOST_RETRY_LIMIT = 3
_FAILURES = frozenset({Phase.FAILED, Phase.TIMED_OUT, Phase.LOST, Phase.CANCELLED})


def _is_failure(attempt: Attempt) -> bool:
    """A failure that spends the retry budget (a lost or interrupted attempt does not)."""
    if attempt.phase is Phase.LOST:
        return False
    if attempt.phase is Phase.CANCELLED and attempt.reason == Reason.RUNTIME_SHUTDOWN:
        return False
    return attempt.phase in _FAILURES


@dataclass(frozen=True, slots=True)
class _StartFailed:
    """An attempt its runtime refused to start: applied like a report, in the job's loop."""

    subjob: str
    session: str
    message: str


_Inbound = AttemptReport | _StartFailed


@dataclass(slots=True, eq=False)
class _Sub:
    """One sub-job during a pass: as stored (None if the pass creates it) and as decided."""

    stored: StoredObject | None
    model: SubJob
    status: SubJobStatus

    @property
    def name(self) -> str:
        return self.model.metadata.name


@dataclass(slots=True, eq=False)
class _Pass:
    """What one pass over one job decided, before it is committed."""

    name: str
    obj: StoredObject
    job: Job
    status: JobStatus
    subs: list[_Sub] = field(default_factory=list)
    taken: list[_Inbound] = field(default_factory=list)
    creates: list[StoredObject] = field(default_factory=list)
    starts: list[AttemptStart] = field(default_factory=list)
    #: (runtime name, attempt id, reason) of attempts to stop after the commit.
    stops: list[tuple[str, str, str]] = field(default_factory=list)
    wake: list[float] = field(default_factory=list)
    warnings: tuple[str, ...] = ()
    #: (duration, succeeded) once the run ended, for the long-running history.
    ended: tuple[float, bool] | None = None

    def batch(self) -> tuple[list[StoredObject], list[tuple[StoredObject, SubJob | Job]]]:
        """The creates, and the status writes with the typed model each one writes."""
        writes: list[tuple[StoredObject, SubJob | Job]] = []
        for sub in self.subs:
            # A pass replaces a status only to change it; the store skips a write that
            # changes nothing anyway.
            if sub.stored is not None and sub.status is not sub.model.status:
                model = sub.model.model_copy(update={"status": sub.status})
                writes.append(
                    (dataclasses.replace(sub.stored, status=dump_model(sub.status)), model)
                )
        if self.status is not self.job.status:
            job = self.job.model_copy(update={"status": self.status})
            writes.append((dataclasses.replace(self.obj, status=dump_model(self.status)), job))
        return self.creates, writes


class JobController:
    """Reconciles Jobs and applies attempt reports (see the module docstring).

    ``enqueue`` is how reports and timers ask for a job to be reconciled again; the manager
    sets it to its work queue's ``add``.
    """

    def __init__(
        self,
        store: CachedStore,
        runtimes: Mapping[str, Runtime],
        *,
        clock: Clock,
        log_dir: Path,
        kill_grace: float = 10.0,
        longrunning: LongRunningDetector | None = None,
    ) -> None:
        self._store = store
        self._runtimes = runtimes
        self._clock = clock
        self._log_dir = log_dir
        self._kill_grace = kill_grace
        self._longrunning = longrunning or LongRunningDetector()
        self._histories_loaded: set[str] = set()
        #: Reports (and refused starts) not applied yet, per job, in arrival order.
        self._inbox: dict[str, list[_Inbound]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._warnings: dict[str, list[str]] = {}
        self.long_running_warnings = 0
        #: False once the runtimes are closing: passes then only record what is reported
        #: (the final reports of interrupted attempts) and dispatch nothing new.
        self.dispatching = True
        self.enqueue: Callable[[str], None] = lambda name: None
        #: Told the name of a CronJob whose run this controller just finished (its active
        #: runs changed); the manager sets it to the CronJob work queue's ``add``.
        self.run_finished: Callable[[str], None] = lambda name: None
        #: How a report asks for its job's pass; the manager lets reports linger a moment,
        #: so that those arriving together (an attempt that starts and ends at once, many
        #: jobs finishing together) are applied by one pass and written in one commit.
        self.enqueue_report: Callable[[str], None] = lambda name: self.enqueue(name)

    # ---- reports ----------------------------------------------------------------------------

    def on_report(self, report: AttemptReport) -> None:
        """The runtime callback: queue the report for its job's next pass.

        Called on the event loop by the built-in runtimes; a call from another thread is
        handed to the loop first, so the inbox and the work queue are only touched there.
        """
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.on_report, report)
            return
        self._deliver(parse_attempt_id(report.attempt_id)[0], report)

    def _deliver(self, job: str, item: _Inbound) -> None:
        self._inbox.setdefault(job, []).append(item)
        self.enqueue_report(job)

    def waiting_reports(self) -> list[str]:
        """The jobs whose inbox holds reports not applied yet."""
        return [name for name, items in self._inbox.items() if items]

    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()

    # ---- reconcile --------------------------------------------------------------------------

    async def reconcile(self, name: str) -> Result | None:
        outcome = (await self.reconcile_batch([name]))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def reconcile_batch(self, names: Sequence[str]) -> list[Result | Exception | None]:
        """One pass per job, all committed in one transaction (see the module docstring)."""
        self._bind_loop()
        now = self._clock.now()
        passes: list[_Pass | None] = []
        outcomes: list[Result | Exception | None] = []
        for name in names:
            taken = self._inbox.pop(name, [])
            try:
                passes.append(await self._pass(name, taken, now))
                outcomes.append(None)
            except Exception as exc:
                self._restore(name, taken)
                passes.append(None)
                outcomes.append(exc)
        live = [(i, p) for i, p in enumerate(passes) if p is not None]
        committed = await self._commit([p for _, p in live])
        for (index, job_pass), done in zip(live, committed, strict=True):
            if isinstance(done, Exception):
                self._restore(job_pass.name, job_pass.taken)
                self._warnings.setdefault(job_pass.name, [])[:0] = job_pass.warnings
                outcomes[index] = done
                continue
            outcomes[index] = await self._after_commit(job_pass)
        return outcomes

    def _restore(self, name: str, taken: list[_Inbound]) -> None:
        """Put reports back at the front of the inbox: the pass that took them failed."""
        if taken:
            self._inbox[name] = taken + self._inbox.get(name, [])

    async def _commit(self, passes: list[_Pass]) -> list[BatchResult | Exception]:
        """Commit every pass in one transaction, or each on its own if that fails."""
        plans = [p.batch() for p in passes]
        if not any(creates or writes for creates, writes in plans):
            return [BatchResult() for _ in passes]
        try:
            result = await self._store.commit(
                Batch(
                    creates=[o for creates, _ in plans for o in creates],
                    status_updates=[o for _, writes in plans for o, _ in writes],
                    keep_uids=True,
                )
            )
        except Exception as error:
            if len(passes) == 1:
                raise
            # One stale pass fails the whole transaction: commit each on its own (the store
            # groups these into one transaction again, each in its own savepoint).
            singles = await asyncio.gather(
                *(self._commit_one(creates, writes) for creates, writes in plans),
                return_exceptions=True,
            )
            results: list[BatchResult | Exception] = []
            for (_, writes), single in zip(plans, singles, strict=True):
                if isinstance(single, BatchResult):
                    self._remember(single, writes)
                elif not isinstance(single, Exception):
                    raise single from error  # cancelled: not a failure of one job
                results.append(single)
            return results
        self._remember(result, [w for _, writes in plans for w in writes])
        results = []
        created = updated = 0
        for creates, writes in plans:
            results.append(
                BatchResult(
                    created=result.created[created : created + len(creates)],
                    status_updated=result.status_updated[updated : updated + len(writes)],
                )
            )
            created += len(creates)
            updated += len(writes)
        return results

    async def _commit_one(
        self, creates: list[StoredObject], writes: list[tuple[StoredObject, SubJob | Job]]
    ) -> BatchResult:
        if not creates and not writes:
            return BatchResult()
        return await self._store.commit(
            Batch(creates=creates, status_updates=[o for o, _ in writes], keep_uids=True)
        )

    def _remember(
        self, result: BatchResult, writes: Sequence[tuple[StoredObject, SubJob | Job]]
    ) -> None:
        """Keep the typed models written, and tell CronJobs whose runs finished."""
        for stored, (_, model) in zip(result.status_updated, writes, strict=True):
            self._store.keep_typed(stored, model)
            if isinstance(model, Job) and model.status.phase.terminal:
                owner = stored.labels.get(CRONJOB_LABEL)
                if owner is not None:
                    self.run_finished(owner)

    async def _after_commit(self, job_pass: _Pass) -> Result | None:
        """Act on a committed pass: stop what must stop, start what was dispatched."""
        for runtime_name, ident, reason in job_pass.stops:
            runtime = self._runtimes.get(runtime_name)
            if runtime is not None:
                # Unknown here means it ran in a previous process: recovery settles it.
                with contextlib.suppress(UnknownAttemptError):
                    await runtime.cancel(ident, grace=self._kill_grace, reason=reason)
        await self._start_all(job_pass.starts)
        if job_pass.ended is not None:
            duration, success = job_pass.ended
            self._longrunning.finished(job_pass.name, duration, success=success)
        if not job_pass.wake or job_pass.status.phase.terminal:
            return None
        return Result(requeue_after=max(0.0, min(job_pass.wake)))

    async def _pass(self, name: str, taken: list[_Inbound], now: datetime) -> _Pass | None:
        """Decide everything about job ``name`` (see the module docstring); write nothing."""
        try:
            obj = await self._store.get("Job", name)
        except NotFound:
            return None  # deleted: its reports have nowhere to go
        job = self._store.typed(obj, Job)
        job_pass = _Pass(name=name, obj=obj, job=job, status=job.status, taken=taken)
        for stored in await self._store.owned("SubJob", obj.uid):
            model = self._store.typed(stored, SubJob)
            job_pass.subs.append(_Sub(stored, model, model.status))
        by_name = {sub.name: sub for sub in job_pass.subs}
        for item in taken:
            target = item.subjob if isinstance(item, _StartFailed) else item.attempt_id
            sub = by_name.get(
                item.subjob if isinstance(item, _StartFailed) else parse_attempt_id(target)[1]
            )
            if sub is None:
                logger.debug("dropping a report for %s: no such sub-job of %s", item, name)
                continue
            self._apply(sub, item)
        if job.status.phase.terminal or not self.dispatching:
            return job_pass  # late reports still complete the attempts' records
        if not job_pass.subs:
            try:
                self._fan_out(job_pass)
            except ValueError as exc:
                self._finish(job_pass, Phase.FAILED, "InvalidTargets", str(exc), now)
                return job_pass
        self._decide(job_pass, now)
        await self._watch_duration(job_pass, now)
        return job_pass

    def _decide(self, job_pass: _Pass, now: datetime) -> None:
        job = job_pass.job
        start_time = job.status.start_time or now
        cancel_reason = job.metadata.annotations.get(CANCEL_ANNOTATION)
        if cancel_reason is not None:
            self._stop_all(job_pass, job_pass.subs, Phase.CANCELLED, cancel_reason, now)
            self._finish(job_pass, Phase.CANCELLED, cancel_reason, "the run was cancelled", now)
            return
        if job.spec.timeout_seconds is not None:
            deadline = start_time.timestamp() + job.spec.timeout_seconds
            if now.timestamp() >= deadline:
                self._stop_all(job_pass, job_pass.subs, Phase.TIMED_OUT, "DeadlineExceeded", now)
                self._finish(
                    job_pass,
                    Phase.TIMED_OUT,
                    "DeadlineExceeded",
                    f"the run exceeded its timeout of {job.spec.timeout_seconds:g}s",
                    now,
                )
                return
            job_pass.wake.append(deadline - now.timestamp())
        guarantee = Guarantee(job.metadata.annotations.get(GUARANTEE_ANNOTATION, "AtLeastOnce"))
        for sub in job_pass.subs:
            delay = self._drive(job_pass, sub, guarantee, now)
            if delay is not None:
                job_pass.wake.append(delay)
        phases = [sub.status.phase for sub in job_pass.subs]
        phase = aggregate_phase(job.spec.success_policy, phases, job.status.phase)
        if phase.terminal:
            live = [sub for sub in job_pass.subs if not sub.status.phase.terminal]
            self._stop_all(job_pass, live, Phase.CANCELLED, "RunFinished", now)
        update: dict[str, object] = {
            "phase": phase,
            "counts": PhaseCounts.of(phases),
            "start_time": start_time,
        }
        if phase.terminal and job.status.completion_time is None:
            update["completion_time"] = now
            done = sum(1 for p in phases if p is Phase.SUCCEEDED)
            update["reason"] = "Completed" if phase is Phase.SUCCEEDED else "SuccessPolicyUnmet"
            update["message"] = f"{done} of {len(phases)} targets succeeded"
        current = job.status
        if any(
            (old := getattr(current, key)) is not value and old != value
            for key, value in update.items()
        ):
            job_pass.status = current.model_copy(update=update)

    # ---- fan-out ------------------------------------------------------------------------------

    def fan_out(self, template: FanOutTemplate, run: StoredObject) -> FanOutPlan:
        """The sub-jobs of ``run`` (whose uid is set) from ``template``, each with its first
        attempt recorded and a uid of its own, for the run's creator to write in the run's
        own transaction and then hand to :meth:`start_planned`."""
        return plan_fan_out(template, job=run.name, job_uid=run.uid, log_dir=self._log_dir)

    async def start_planned(
        self, runs: Sequence[tuple[FanOutPlan, StoredObject, Sequence[StoredObject]]]
    ) -> None:
        """Start the first attempts of runs created with their sub-jobs: for each, its plan,
        the run as stored and its sub-jobs as stored (in the plan's order)."""
        self._bind_loop()
        for plan, _, created in runs:
            for stored, (spec, status) in zip(created, plan.models, strict=True):
                self._store.keep_typed(stored, assemble(stored, spec, status))
        await self._start_all([start for plan, _, _ in runs for start in plan.starts])

    def hand_over(self, name: str) -> None:
        """Look at job ``name`` soon: created or changed by another controller, which did not
        start it (its events are not routed: the writer tells)."""
        self.enqueue(name)

    def _fan_out(self, job_pass: _Pass) -> None:
        """Create the sub-jobs with their first attempts recorded (in the pass's write).

        Recording the first attempt in the creating transaction is the dispatch
        compare-and-set folded into the fan-out: nobody else can have dispatched a sub-job that
        did not exist, and a crash before the start leaves the attempt on record for recovery.
        """
        template = FanOutTemplate.of(job_pass.job.spec)
        if template is None:
            raise ValueError("a selector's targets are resolved against agents at run time")
        plan = self.fan_out(template, job_pass.obj)
        for stored, (spec, status) in zip(plan.objects, plan.models, strict=True):
            model = assemble(stored, spec, status)
            assert isinstance(model, SubJob)
            job_pass.creates.append(stored)
            job_pass.subs.append(_Sub(None, model, model.status))
        job_pass.starts.extend(plan.starts)

    # ---- driving one sub-job -------------------------------------------------------------------

    def _drive(
        self, job_pass: _Pass, sub: _Sub, guarantee: Guarantee, now: datetime
    ) -> float | None:
        """Move one sub-job on: first attempt, next step, or a retry. Returns a wake-up delay."""
        status = sub.status
        if status.phase.terminal:
            return None
        last = status.attempts[-1] if status.attempts else None
        if last is None:
            first = StepName.PREPARE if sub.model.spec.prepare is not None else StepName.MAIN
            self._dispatch(job_pass, sub, first, 1)
            return None
        if not last.phase.terminal:
            return None
        if last.phase is Phase.SUCCEEDED:
            if last.step is StepName.PREPARE:
                self._dispatch(job_pass, sub, StepName.MAIN, last.number + 1)
            else:
                self._settle(sub, Phase.SUCCEEDED, "Completed", "", now)
            return None
        retry, why = self._may_retry(sub.status, sub.model, guarantee)
        if not retry:
            self._settle(sub, last.phase, last.reason or why, last.message or why, now)
            return None
        failures = sum(
            1 for a in status.attempts if a.phase in _FAILURES and a.phase is not Phase.LOST
        )
        delay = (
            sub.model.spec.retries.delay(max(1, failures)).total_seconds()
            if last.phase is not Phase.LOST
            else 0.0
        )
        finished = last.finish_time or now
        due = finished.timestamp() + delay
        if due > now.timestamp():
            return due - now.timestamp()
        self._dispatch(job_pass, sub, last.step, last.number + 1)
        return None

    @staticmethod
    def _may_retry(status: SubJobStatus, sub: SubJob, guarantee: Guarantee) -> tuple[bool, str]:
        attempts = status.attempts
        last = attempts[-1]
        interrupted = last.phase is Phase.CANCELLED and last.reason == Reason.RUNTIME_SHUTDOWN
        if last.phase is Phase.CANCELLED and not interrupted:
            return False, "the attempt was cancelled"
        if last.phase is Phase.LOST or interrupted:
            if guarantee is Guarantee.AT_MOST_ONCE:
                return False, "the attempt was lost and AtMostOnce forbids starting it again"
            lost = sum(1 for a in attempts if a.phase in _FAILURES and not _is_failure(a))
            return lost <= LOST_RETRY_LIMIT, f"lost {lost} times"
        failures = sum(1 for a in attempts if _is_failure(a))
        return failures <= sub.spec.retries.limit, f"failed {failures} times"

    def _dispatch(self, job_pass: _Pass, sub: _Sub, step: StepName, number: int) -> None:
        """Record attempt ``number``; it is handed to its runtime once the record commits."""
        sub.status, start = self._record_attempt(job_pass.name, sub.model, sub.status, step, number)
        job_pass.starts.append(start)

    def _record_attempt(
        self, job: str, sub: SubJob, status: SubJobStatus, step: StepName, number: int
    ) -> tuple[SubJobStatus, AttemptStart]:
        """The sub-job's status with attempt ``number`` recorded (a fresh session), and what
        to start once it is stored (or why it cannot start)."""
        record, start = attempt_start(
            step_plan(sub.spec, step),
            job=job,
            subjob=sub.metadata.name,
            target=sub.spec.target,
            shard_index=sub.spec.shard_index,
            number=number,
            log_dir=self._log_dir,
        )
        attempt = Attempt(number=number, step=step, runtime=record)
        recorded = status.model_copy(
            update={
                "attempts": (*status.attempts, attempt),
                "session_id": start.session,
                "report_sequence": 0,
            }
        )
        return recorded, start

    async def _start_all(self, starts: Sequence[AttemptStart]) -> None:
        """Start attempts side by side: a runtime's start returns once the attempt runs,
        which for most takes a turn of the loop."""
        if len(starts) == 1:
            await self._start(starts[0])
        elif starts:
            await asyncio.gather(*(self._start(start) for start in starts))

    async def _start(self, start: AttemptStart) -> None:
        """Hand a recorded attempt to its runtime; a start that fails fails the attempt."""
        try:
            runtime = self._runtimes.get(start.runtime)
            if runtime is None:
                raise ValueError(f"no runtime named {start.runtime!r} is configured")
            if isinstance(start.spec, str):
                raise ValueError(start.spec)
            await runtime.start(start.spec, self.on_report)
        except Exception as exc:  # a start that fails is the attempt's failure, not ours
            ident = start.spec.attempt_id if isinstance(start.spec, AttemptSpec) else start.subjob
            logger.warning("attempt %s could not start: %s", ident, exc)
            self._deliver(start.job, _StartFailed(start.subjob, start.session, str(exc)))

    # ---- applying reports ---------------------------------------------------------------------

    def _apply(self, sub: _Sub, item: _Inbound) -> None:
        status = sub.status
        if isinstance(item, _StartFailed):
            if status.session_id == item.session and status.attempts:
                sub.status = self._start_failed(status, item.message)
            return
        if status.is_stale_report(item.session, item.seq):
            logger.debug("dropping stale report %s seq %d", item.attempt_id, item.seq)
            return
        sub.status = self._applied(status, item)

    def _start_failed(self, status: SubJobStatus, message: str) -> SubJobStatus:
        now = self._clock.now()
        failed = status.attempts[-1].model_copy(
            update={
                "phase": Phase.FAILED,
                "reason": "StartFailed",
                "message": message,
                "start_time": now,
                "finish_time": now,
            }
        )
        return status.model_copy(
            update={
                "attempts": (*status.attempts[:-1], failed),
                "report_sequence": status.report_sequence + 1,
            }
        )

    def _applied(self, status: SubJobStatus, report: AttemptReport) -> SubJobStatus:
        last = status.attempts[-1]
        phase = report.phase if can_advance(last.phase, report.phase) else last.phase
        runtime = dict(last.runtime)
        if report.pid is not None:
            runtime["pid"] = report.pid
        if report.process_start_time is not None:
            runtime["processStartTime"] = report.process_start_time
        if report.log_dropped_bytes:
            runtime["logDroppedBytes"] = report.log_dropped_bytes
        # Attempt times are when this controller observed them, on its own clock: retries and
        # deadlines are computed from them, and a runtime's clock (a remote agent's, later)
        # may be skewed.
        observed = self._clock.now()
        attempt = last.model_copy(
            update={
                "phase": phase,
                "start_time": last.start_time or observed,
                "finish_time": observed if phase.terminal else None,
                "exit_code": report.exit_code,
                "signal": report.signal,
                "reason": report.reason,
                "message": report.message or None,
                "runtime": runtime,
            }
        )
        proposed = status.phase
        if report.phase is Phase.RUNNING:
            proposed = Phase.PREPARING if last.step is StepName.PREPARE else Phase.RUNNING
        elif report.phase is Phase.SUCCEEDED:
            proposed = Phase.PREPARED if last.step is StepName.PREPARE else Phase.SUCCEEDED
        new_phase = proposed if can_advance(status.phase, proposed) else status.phase
        update: dict[str, object] = {
            "attempts": (*status.attempts[:-1], attempt),
            "report_sequence": report.seq,
            "phase": new_phase,
            "start_time": status.start_time or attempt.start_time,
        }
        if new_phase.terminal and status.completion_time is None:
            update["completion_time"] = attempt.finish_time
            update["reason"] = report.reason
        return status.model_copy(update=update)

    # ---- endings ----------------------------------------------------------------------------

    @staticmethod
    def _settle(sub: _Sub, phase: Phase, reason: str, message: str, now: datetime) -> None:
        status = sub.status
        if not can_advance(status.phase, phase) or status.phase == phase:
            return
        sub.status = status.model_copy(
            update={
                "phase": phase,
                "reason": reason,
                "message": message or None,
                "completion_time": status.completion_time or now,
            }
        )

    def _stop_all(
        self, job_pass: _Pass, subs: Sequence[_Sub], phase: Phase, reason: str, now: datetime
    ) -> None:
        """Settle the live sub-jobs in ``phase`` and stop their attempts after the commit."""
        for sub in subs:
            if sub.status.phase.terminal:
                continue
            last = sub.status.attempts[-1] if sub.status.attempts else None
            if last is not None and not last.phase.terminal:
                ident = str(last.runtime.get("attemptId", ""))
                if ident:
                    job_pass.stops.append((str(last.runtime.get("runtime", "")), ident, reason))
            self._settle(sub, phase, reason, "", now)

    @staticmethod
    def _finish(job_pass: _Pass, phase: Phase, reason: str, message: str, now: datetime) -> None:
        status = job_pass.status
        job_pass.status = status.model_copy(
            update={
                "phase": phase,
                "reason": reason,
                "message": message,
                "start_time": status.start_time or now,
                "completion_time": now,
            }
        )

    # ---- long-running runs -----------------------------------------------------------------

    async def _watch_duration(self, job_pass: _Pass, now: datetime) -> None:
        """Warn once when a run goes on longer than expected (into the job's warnings), and
        wake the job when its own threshold comes."""
        name = job_pass.name
        job = job_pass.job
        phase = job_pass.status.phase
        start_time = job_pass.status.start_time or now
        detector = self._longrunning
        if phase.terminal:
            duration = (now - start_time).total_seconds()
            job_pass.ended = (duration, phase is Phase.SUCCEEDED)
            job_pass.warnings = tuple(self._warnings.pop(name, ()))
        elif phase.rank >= Phase.PREPARING.rank:
            series = job.status.cron_job.name if job.status.cron_job else name
            await self._load_history(series, job.status.cron_job)
            threshold = detector.started(
                name,
                cronjob=series,
                started_at=start_time.timestamp(),
                expected=job.spec.expected_duration_seconds,
                warned=bool(job.status.warnings),
            )
            for warning in detector.check(now.timestamp()):
                logger.warning("%s", warning.message)
                self.long_running_warnings += 1
                self._warnings.setdefault(warning.run_id, []).append(warning.message)
                if warning.run_id != name:
                    self.enqueue(warning.run_id)
            job_pass.warnings = tuple(self._warnings.pop(name, ()))
            if threshold is not None and not job.status.warnings and not job_pass.warnings:
                due = start_time.timestamp() + threshold.seconds
                job_pass.wake.append(max(0.0, due - now.timestamp()))
        if job_pass.warnings:
            job_pass.status = job_pass.status.model_copy(
                update={"warnings": job_pass.status.warnings + job_pass.warnings}
            )

    async def _load_history(self, cronjob: str, ref: ObjectRef | None) -> None:
        """Seed a CronJob's duration history from its stored successful runs, once."""
        if cronjob in self._histories_loaded:
            return
        self._histories_loaded.add(cronjob)
        if ref is not None and ref.uid:
            runs = await self._store.owned("Job", ref.uid)
        else:
            runs = (await self._store.list("Job", labels={CRONJOB_LABEL: cronjob})).items
        history = self._longrunning.history(cronjob)
        done = [self._store.typed(r, Job).status for r in runs]
        finished = sorted(
            (s.completion_time, (s.completion_time - s.start_time).total_seconds())
            for s in done
            if s.phase is Phase.SUCCEEDED and s.start_time and s.completion_time
        )
        for _, duration in finished[-history.size :]:
            history.record(duration)

    # ---- crash recovery ---------------------------------------------------------------------

    async def recover(self) -> int:
        """Settle attempts a previous process left running; returns how many were found.

        Each runtime reports its records Lost; the reports go to their jobs' inboxes like any
        other report, and the jobs are enqueued.
        """
        self._bind_loop()
        subs = (await self._store.list("SubJob")).items
        pending: dict[str, list[tuple[SubJob, RecoveryRecord]]] = {}
        for obj in subs:
            sub = self._store.typed(obj, SubJob)
            if sub.status.phase.terminal or not sub.status.attempts:
                continue
            last = sub.status.attempts[-1]
            if last.phase.terminal or sub.status.session_id is None:
                continue
            pid = last.runtime.get("pid")
            start = last.runtime.get("processStartTime")
            log_path = last.runtime.get("logPath")
            record = RecoveryRecord(
                attempt_id=str(last.runtime.get("attemptId")),
                session=sub.status.session_id,
                last_seq=sub.status.report_sequence,
                pid=pid if isinstance(pid, int) else None,
                process_start_time=float(start) if isinstance(start, int | float) else None,
                log_path=Path(log_path) if isinstance(log_path, str) else None,
            )
            pending.setdefault(str(last.runtime.get("runtime", "")), []).append((sub, record))
        found = 0
        for runtime_name, items in pending.items():
            runtime = self._runtimes.get(runtime_name)
            if runtime is None:
                continue
            reports = await runtime.recover([record for _, record in items])
            for (sub, _), report in zip(items, reports, strict=True):
                self._deliver(sub.spec.job.name, report)
                found += 1
        return found

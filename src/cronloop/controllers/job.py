"""The Job controller: fans runs out into sub-jobs, starts attempts, keeps statuses in order.

Two paths write, each serialised the sync-loop way:

- **reconcile(job)**, driven by a work queue keyed by Job name (never two at once for a job):
  creates the sub-jobs in one transaction (fan-out of 1,000 targets is one write), dispatches
  attempts, retries failed ones after their backoff, enforces the job's deadline, honours a
  cancel request, and aggregates the sub-jobs' phases into the job's phase;
- **reports** from runtimes, posted to a :class:`~cronloop.sync.KeyedLooper` keyed by Job name,
  so that every status update of one job runs in that job's own loop, in arrival order (the
  seed-000 fix). A report carries its attempt's session and a sequence number; a stale one is
  dropped, and phases only move forward.

Dispatch is a compare-and-set: the attempt is first written to the sub-job's status (with a
fresh session id) and only then handed to a runtime, so two dispatchers cannot both start it
and a crash leaves a record of every attempt that may have started. After a crash,
:meth:`JobController.recover` settles attempts left running: the runtime reports them Lost
(never re-running them blindly); an AtLeastOnce run then gets a new attempt, an AtMostOnce
run does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import cast

from cronloop.api import (
    Attempt,
    Guarantee,
    InlineStep,
    Job,
    JobStatus,
    ObjectMeta,
    ObjectRef,
    Phase,
    PhaseCounts,
    ProcessStep,
    Step,
    StepName,
    SubJob,
    SubJobSpec,
    SubJobStatus,
    aggregate_phase,
    can_advance,
    subjob_name,
)
from cronloop.controllers.cache import CachedStore
from cronloop.controllers.clock import Clock
from cronloop.controllers.cronjob import CANCEL_ANNOTATION, GUARANTEE_ANNOTATION, FanOutPlan
from cronloop.controllers.longrunning import LongRunningDetector
from cronloop.controllers.objects import CRONJOB_LABEL, JOB_LABEL, to_stored
from cronloop.runtimes import (
    AttemptReport,
    AttemptSpec,
    InlineSettings,
    ProcessSettings,
    Reason,
    RecoveryRecord,
    Runtime,
    StepSettings,
    UnknownAttemptError,
)
from cronloop.store import Conflict, NotFound, StoredObject, new_uid
from cronloop.sync import KeyedLooper, LooperClosed, Result

__all__ = ["LOST_RETRY_LIMIT", "JobController", "attempt_id", "parse_attempt_id"]

logger = logging.getLogger(__name__)

#: How many times an AtLeastOnce sub-job is restarted after its attempt was Lost (a crash or a
#: vanished runtime), on top of its retry budget for ordinary failures.
LOST_RETRY_LIMIT = 3
_CAS_TRIES = 20
_FAILURES = frozenset({Phase.FAILED, Phase.TIMED_OUT, Phase.LOST, Phase.CANCELLED})


#: How to start a recorded attempt: the runtime's name and the spec (or why there is none).
_Start = tuple[str, AttemptSpec | str]


def _is_failure(attempt: Attempt) -> bool:
    """A failure that spends the retry budget (a lost or interrupted attempt does not)."""
    if attempt.phase is Phase.LOST:
        return False
    if attempt.phase is Phase.CANCELLED and attempt.reason == Reason.RUNTIME_SHUTDOWN:
        return False
    return attempt.phase in _FAILURES


def attempt_id(job: str, subjob: str, number: int) -> str:
    """The system-wide id of attempt ``number`` of ``subjob``: ``<job>/<subjob>#<number>``."""
    return f"{job}/{subjob}#{number}"


def parse_attempt_id(value: str) -> tuple[str, str, int]:
    """``(job, subjob, number)`` from an :func:`attempt_id` (names never contain ``/``)."""
    job, _, rest = value.partition("/")
    subjob, _, number = rest.rpartition("#")
    if not job or not subjob or not number.isdigit():
        raise ValueError(f"not an attempt id: {value!r}")
    return job, subjob, int(number)


def _settings(step: Step) -> StepSettings:
    if isinstance(step, InlineStep):
        return InlineSettings(callable=step.callable, kwargs=dict(step.kwargs))
    assert isinstance(step, ProcessStep)
    if step.shell:
        assert step.command is not None
        command: Sequence[str] | str = step.command
    else:
        assert step.argv is not None
        command = step.argv
    return ProcessSettings(
        command=command, shell=step.shell, env=dict(step.env), cwd=step.working_dir
    )


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
        reports: KeyedLooper[str],
        kill_grace: float = 10.0,
        longrunning: LongRunningDetector | None = None,
    ) -> None:
        self._store = store
        self._runtimes = runtimes
        self._clock = clock
        self._log_dir = log_dir
        self._reports = reports
        self._kill_grace = kill_grace
        self._longrunning = longrunning or LongRunningDetector()
        self._histories_loaded: set[str] = set()
        #: Reports not applied yet, per job (runtimes may report from any thread).
        self._pending: dict[str, list[tuple[str, AttemptReport]]] = {}
        self._pending_lock = threading.Lock()
        #: SubJob versions this controller wrote itself: their change events need no
        #: reconcile (whoever wrote them already enqueued the job if it had to).
        self.own_writes: dict[str, int] = {}
        self._warnings: dict[str, list[str]] = {}
        self.long_running_warnings = 0
        self.enqueue: Callable[[str], None] = lambda name: None

    # ---- reconcile --------------------------------------------------------------------------

    async def reconcile(self, name: str) -> Result | None:
        try:
            obj = await self._store.get("Job", name)
        except NotFound:
            return None
        job = self._store.typed(obj, Job)
        if job.status.phase.terminal:
            return None
        now = self._clock.now()
        subjobs = [self._store.typed(o, SubJob) for o in await self._store.owned("SubJob", obj.uid)]
        if not subjobs:
            try:
                subjobs = await self._fan_out(obj, job)
            except ValueError as exc:
                await self._finish(obj, job, Phase.FAILED, "InvalidTargets", str(exc), now)
                return None
        start_time = job.status.start_time or now
        cancel_reason = job.metadata.annotations.get(CANCEL_ANNOTATION)
        if cancel_reason is not None:
            await self._stop_all(subjobs, Phase.CANCELLED, cancel_reason, now)
            await self._finish(
                obj, job, Phase.CANCELLED, cancel_reason, "the run was cancelled", now
            )
            return None
        deadline = None
        if job.spec.timeout_seconds is not None:
            deadline = start_time.timestamp() + job.spec.timeout_seconds
            if now.timestamp() >= deadline:
                await self._stop_all(subjobs, Phase.TIMED_OUT, "DeadlineExceeded", now)
                await self._finish(
                    obj,
                    job,
                    Phase.TIMED_OUT,
                    "DeadlineExceeded",
                    f"the run exceeded its timeout of {job.spec.timeout_seconds:g}s",
                    now,
                )
                return None
        wake: list[float] = []
        if deadline is not None:
            wake.append(deadline - now.timestamp())
        guarantee = Guarantee(job.metadata.annotations.get(GUARANTEE_ANNOTATION, "AtLeastOnce"))
        for index, sub in enumerate(subjobs):
            updated, delay = await self._drive(job, sub, guarantee, now)
            subjobs[index] = updated
            if delay is not None:
                wake.append(delay)
        phases = [s.status.phase for s in subjobs]
        phase = aggregate_phase(job.spec.success_policy, phases, job.status.phase)
        if phase.terminal:
            live = [s for s in subjobs if not s.status.phase.terminal]
            await self._stop_all(live, Phase.CANCELLED, "RunFinished", now)
        warnings, deadline_at = await self._watch_duration(job, phase, start_time, now)
        if deadline_at is not None:
            wake.append(max(0.0, deadline_at - now.timestamp()))
        await self._write_job_status(obj, job, phase, phases, start_time, now, warnings)
        return Result(requeue_after=max(0.0, min(wake))) if wake and not phase.terminal else None

    async def _fan_out(self, obj: StoredObject, job: Job) -> list[SubJob]:
        """Create the sub-jobs with their first attempts recorded (one write), then start them.

        Recording the first attempt in the creating transaction is the dispatch
        compare-and-set folded into the fan-out: nobody else can have dispatched a sub-job that
        did not exist, and a crash before the start leaves the attempt on record for recovery.
        """
        plan = self._plan(obj, job)
        stored = await self._store.create_many(plan.objects, keep_uids=True)
        return await self.start_planned(plan, stored)

    def plan_fan_out(self, obj: StoredObject, job: Job) -> FanOutPlan | None:
        """The sub-jobs of the run ``job`` (stored as ``obj``, whose uid is set), each with its
        first attempt recorded and a uid of its own, for the run's creator to write in the
        run's own transaction; ``None`` when the targets are only known at run time."""
        try:
            return self._plan(obj, job)
        except ValueError:
            return None  # a selector: the Job's reconcile fails it with InvalidTargets

    async def start_planned(
        self, plan: FanOutPlan, created: Sequence[StoredObject]
    ) -> list[SubJob]:
        """Start the first attempts of sub-jobs created from ``plan`` (in the same order)."""
        subjobs = []
        for stored, start in zip(created, plan.starts, strict=True):
            self.own_writes[stored.name] = stored.resource_version
            sub = self._store.typed(stored, SubJob)
            subjobs.append(await self._start(sub, cast(_Start, start)))
        return subjobs

    def _plan(self, obj: StoredObject, job: Job) -> FanOutPlan:
        spec = job.spec
        targets = spec.targets.resolve()
        name = job.metadata.name
        objs = []
        starts = []
        for index, target in enumerate(targets):
            sub = SubJob(
                metadata=ObjectMeta(name=subjob_name(name, target), labels={JOB_LABEL: name}),
                spec=SubJobSpec(
                    job=ObjectRef(name=name, uid=obj.uid),
                    target=target,
                    shard_index=index if spec.targets.shards is not None else None,
                    prepare=spec.prepare,
                    main=spec.main,
                    retries=spec.retries,
                ),
            )
            first = StepName.PREPARE if spec.prepare is not None else StepName.MAIN
            status, start = self._record_attempt(job, sub, first, 1)
            stored = to_stored(sub.model_copy(update={"status": status}), owner_uid=obj.uid)
            objs.append(dataclasses.replace(stored, uid=new_uid()))
            starts.append(start)
        return FanOutPlan(objects=objs, starts=tuple(starts))

    async def _drive(
        self, job: Job, sub: SubJob, guarantee: Guarantee, now: datetime
    ) -> tuple[SubJob, float | None]:
        """Move one sub-job on: first attempt, next step, or a retry. Returns a wake-up delay."""
        status = sub.status
        if status.phase.terminal:
            return sub, None
        last = status.attempts[-1] if status.attempts else None
        if last is None:
            first = StepName.PREPARE if sub.spec.prepare is not None else StepName.MAIN
            return await self._dispatch(job, sub, first, 1), None
        if not last.phase.terminal:
            return sub, None
        if last.phase is Phase.SUCCEEDED:
            if last.step is StepName.PREPARE:
                return await self._dispatch(job, sub, StepName.MAIN, last.number + 1), None
            return await self._settle(sub, Phase.SUCCEEDED, "Completed", "", now), None
        retry, why = self._may_retry(sub, guarantee)
        if not retry:
            return await self._settle(
                sub, last.phase, last.reason or why, last.message or why, now
            ), None
        failures = sum(
            1 for a in status.attempts if a.phase in _FAILURES and a.phase is not Phase.LOST
        )
        delay = (
            sub.spec.retries.delay(max(1, failures)).total_seconds()
            if last.phase is not Phase.LOST
            else 0.0
        )
        finished = last.finish_time or now
        due = finished.timestamp() + delay
        if due > now.timestamp():
            return sub, due - now.timestamp()
        return await self._dispatch(job, sub, last.step, last.number + 1), None

    @staticmethod
    def _may_retry(sub: SubJob, guarantee: Guarantee) -> tuple[bool, str]:
        attempts = sub.status.attempts
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

    async def _dispatch(self, job: Job, sub: SubJob, step: StepName, number: int) -> SubJob:
        """Record attempt ``number`` (compare-and-set), then hand it to its runtime."""
        status, start = self._record_attempt(job, sub, step, number)
        sub = await self._write_subjob(sub, status)  # Conflict -> the reconcile is retried
        return await self._start(sub, start)

    def _record_attempt(
        self, job: Job, sub: SubJob, step: StepName, number: int
    ) -> tuple[SubJobStatus, _Start]:
        """The sub-job's status with attempt ``number`` recorded (a fresh session), and what
        to start once it is stored (or why it cannot start)."""
        spec_step = sub.spec.prepare if step is StepName.PREPARE else sub.spec.main
        assert spec_step is not None
        session = new_uid().replace("-", "")
        ident = attempt_id(job.metadata.name, sub.metadata.name, number)
        log_path = (
            self._log_dir / job.metadata.name / f"{sub.metadata.name}.{number}.{step.value}.log"
        )
        attempt = Attempt(
            number=number,
            step=step,
            runtime={
                "session": session,
                "attemptId": ident,
                "runtime": spec_step.runtime,
                "logPath": str(log_path),
            },
        )
        status = sub.status.model_copy(
            update={
                "attempts": (*sub.status.attempts, attempt),
                "session_id": session,
                "report_sequence": 0,
            }
        )
        try:
            start: AttemptSpec | str = AttemptSpec(
                attempt_id=ident,
                session=session,
                job=job.metadata.name,
                subjob=sub.metadata.name,
                target=sub.spec.target,
                step=step.value,
                attempt=number,
                settings=_settings(spec_step),
                log_path=log_path,
                shard_index=sub.spec.shard_index,
                timeout=spec_step.timeout_seconds,
                **(
                    {"log_limit": spec_step.log_limit_bytes}
                    if isinstance(spec_step, ProcessStep) and spec_step.log_limit_bytes
                    else {}
                ),
            )
        except Exception as exc:  # settings a runtime cannot take fail the attempt
            start = str(exc)
        return status, (spec_step.runtime, start)

    async def _start(self, sub: SubJob, start: _Start) -> SubJob:
        """Hand a recorded attempt to its runtime; a start that fails fails the attempt."""
        session = sub.status.session_id
        assert session is not None
        runtime_name, spec = start
        try:
            runtime = self._runtimes.get(runtime_name)
            if runtime is None:
                raise ValueError(f"no runtime named {runtime_name!r} is configured")
            if isinstance(spec, str):
                raise ValueError(spec)
            await runtime.start(spec, self.on_report)
        except Exception as exc:  # a start that fails is the attempt's failure, not ours
            ident = sub.status.attempts[-1].runtime.get("attemptId")
            logger.warning("attempt %s could not start: %s", ident, exc)
            return await self._fail_attempt(sub.metadata.name, session, str(exc))
        return sub

    # ---- reports ----------------------------------------------------------------------------

    def on_report(self, report: AttemptReport) -> None:
        """The runtime callback: apply the report in its job's sync loop.

        Reports of one job that arrive while its loop is busy are applied together by the
        next turn (each sub-job written once, with its reports applied in arrival order): a
        job that starts and ends at once costs one write, not one per report.
        """
        job, subjob, _ = parse_attempt_id(report.attempt_id)
        with self._pending_lock:
            pending = self._pending.setdefault(job, [])
            pending.append((subjob, report))
            if len(pending) > 1:
                return  # the turn already posted for this job takes it
        try:
            self._reports.post(job, self._apply_pending, job)
        except LooperClosed:
            with self._pending_lock:
                self._pending.pop(job, None)
            # Only after shutdown: the attempt stays Running in the store and the next start's
            # recovery settles it as Lost.
            logger.warning("report %s seq %d arrived after shutdown", report.attempt_id, report.seq)

    async def _apply_pending(self, job: str) -> None:
        with self._pending_lock:
            pending = self._pending.pop(job, [])
        by_subjob: dict[str, list[AttemptReport]] = {}
        for subjob, report in pending:
            by_subjob.setdefault(subjob, []).append(report)
        for subjob, reports in by_subjob.items():
            await self._apply_reports(job, subjob, reports)

    async def _apply_reports(self, job: str, subjob: str, reports: list[AttemptReport]) -> None:
        """Apply ``reports`` (one sub-job's, in arrival order) in one compare-and-set."""
        for _ in range(_CAS_TRIES):
            try:
                obj = await self._store.get("SubJob", subjob)
            except NotFound:
                return
            sub = self._store.typed(obj, SubJob)
            status = sub.status
            for report in reports:
                if status.is_stale_report(report.session, report.seq):
                    logger.debug("dropping stale report %s seq %d", report.attempt_id, report.seq)
                else:
                    status = self._applied(status, report)
            if status is sub.status:
                return
            try:
                await self._write_subjob(sub, status)
            except Conflict:
                continue
            self.enqueue(job)
            return
        raise RuntimeError(f"could not apply the reports of {subjob} (seq {reports[-1].seq})")

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

    async def _fail_attempt(self, subjob: str, session: str, message: str) -> SubJob:
        """Record that the attempt of ``session`` could not start (and nothing newer)."""
        obj = await self._store.get("SubJob", subjob)
        sub = self._store.typed(obj, SubJob)
        if sub.status.session_id != session:
            return sub  # a later dispatch owns the sub-job now
        now = self._clock.now()
        last = sub.status.attempts[-1]
        failed = last.model_copy(
            update={
                "phase": Phase.FAILED,
                "reason": "StartFailed",
                "message": message,
                "start_time": now,
                "finish_time": now,
            }
        )
        status = sub.status.model_copy(
            update={
                "attempts": (*sub.status.attempts[:-1], failed),
                "report_sequence": sub.status.report_sequence + 1,
            }
        )
        sub = await self._write_subjob(sub, status)
        self.enqueue(sub.spec.job.name)  # its retry is decided by the next reconcile
        return sub

    # ---- endings ----------------------------------------------------------------------------

    async def _settle(
        self, sub: SubJob, phase: Phase, reason: str, message: str, now: datetime
    ) -> SubJob:
        if not can_advance(sub.status.phase, phase) or sub.status.phase == phase:
            return sub
        status = sub.status.model_copy(
            update={
                "phase": phase,
                "reason": reason,
                "message": message or None,
                "completion_time": sub.status.completion_time or now,
            }
        )
        return await self._write_subjob(sub, status)

    async def _stop_all(
        self, subjobs: Sequence[SubJob], phase: Phase, reason: str, now: datetime
    ) -> None:
        """Stop every live attempt and settle the sub-jobs in ``phase``."""
        for sub in subjobs:
            if sub.status.phase.terminal:
                continue
            last = sub.status.attempts[-1] if sub.status.attempts else None
            if last is not None and not last.phase.terminal:
                runtime = self._runtimes.get(str(last.runtime.get("runtime", "")))
                ident = str(last.runtime.get("attemptId", ""))
                if runtime is not None and ident:
                    # Unknown here means it ran in a previous process: recovery settles it.
                    with contextlib.suppress(UnknownAttemptError):
                        await runtime.cancel(ident, grace=self._kill_grace, reason=reason)
            for _ in range(_CAS_TRIES):
                try:
                    await self._settle(sub, phase, reason, "", now)
                    break
                except Conflict:
                    sub = self._store.typed(
                        await self._store.get("SubJob", sub.metadata.name), SubJob
                    )

    async def _finish(
        self, obj: StoredObject, job: Job, phase: Phase, reason: str, message: str, now: datetime
    ) -> None:
        status = job.status.model_copy(
            update={
                "phase": phase,
                "reason": reason,
                "message": message,
                "start_time": job.status.start_time or now,
                "completion_time": now,
            }
        )
        await self._store.write_status(obj, job.model_copy(update={"status": status}))

    async def _write_job_status(
        self,
        obj: StoredObject,
        job: Job,
        phase: Phase,
        phases: list[Phase],
        start_time: datetime,
        now: datetime,
        warnings: tuple[str, ...] = (),
    ) -> None:
        update: dict[str, object] = {
            "phase": phase,
            "counts": PhaseCounts.of(phases),
            "start_time": start_time,
            "warnings": job.status.warnings + warnings,
        }
        if phase.terminal and job.status.completion_time is None:
            update["completion_time"] = now
            done = sum(1 for p in phases if p is Phase.SUCCEEDED)
            update["reason"] = "Completed" if phase is Phase.SUCCEEDED else "SuccessPolicyUnmet"
            update["message"] = f"{done} of {len(phases)} targets succeeded"
        status: JobStatus = job.status.model_copy(update=update)
        if status != job.status:
            await self._store.write_status(obj, job.model_copy(update={"status": status}))

    async def _write_subjob(self, sub: SubJob, status: SubJobStatus) -> SubJob:
        current = self._store.cache.get("SubJob", sub.metadata.name)
        if current is None or current.resource_version != sub.metadata.resource_version:
            current = to_stored(sub)
        stored = await self._store.write_status(current, sub.model_copy(update={"status": status}))
        self.own_writes[stored.name] = stored.resource_version
        return self._store.typed(stored, SubJob)

    # ---- long-running runs -----------------------------------------------------------------

    async def _watch_duration(
        self, job: Job, phase: Phase, start_time: datetime, now: datetime
    ) -> tuple[tuple[str, ...], float | None]:
        """Warn once when a run goes on longer than expected; returns new warnings and when
        to look again."""
        name = job.metadata.name
        detector = self._longrunning
        if phase.terminal:
            duration = (now - start_time).total_seconds()
            detector.finished(name, duration, success=phase is Phase.SUCCEEDED)
            return tuple(self._warnings.pop(name, ())), None
        if phase.rank < Phase.PREPARING.rank:
            return (), None
        series = job.status.cron_job.name if job.status.cron_job else name
        await self._load_history(series, job.status.cron_job)
        detector.started(
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
        return tuple(self._warnings.pop(name, ())), detector.next_deadline()

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
        """Settle attempts a previous process left running; returns how many were found."""
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
                job = sub.spec.job.name
                await self._apply_reports(job, sub.metadata.name, [report])
                self.enqueue(job)
                found += 1
        return found

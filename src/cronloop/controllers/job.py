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
- **A one-target run is one record**: its sub-job's status is kept in the Job's own
  (``status.subJob``) and a pass reads and writes it there, in the Job's one status write;
  it is otherwise a sub-job like any other (see :mod:`cronloop.controllers.fanout`).
- **Batches**: the work queue hands the controller every job that is ready (up to a bound),
  and their passes commit together in one transaction; if that fails (a stale read, say),
  each pass is committed on its own, so one job's conflict only retries that job.

A pass works on the stored form of the statuses (:mod:`cronloop.controllers.runstatus`), and
on each spec validated once (the specs of one CronJob's runs are one shared object): going
through the typed models for every report cost more than the rest of a run.

**Deletions**: the store keeps nothing of a deleted Job or SubJob, so the controller remembers
the attempts it started, per Job name, until their terminal reports arrive; a pass that finds
its Job gone (or, after a deletion, a sub-job gone or re-created) stops those attempts through
their runtimes, like a cancel.

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
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from pydantic import TypeAdapter

from cronloop.api import (
    TERMINAL_PHASES,
    Guarantee,
    JobSpec,
    Phase,
    RetryPolicy,
    Step,
    StepName,
    SubJob,
    aggregate_phase,
    can_advance,
    subjob_name,
)
from cronloop.controllers._byidentity import ByIdentity
from cronloop.controllers.cache import CachedStore
from cronloop.controllers.clock import Clock
from cronloop.controllers.cronjob import CANCEL_ANNOTATION, GUARANTEE_ANNOTATION
from cronloop.controllers.fanout import (
    AttemptStart,
    FanOutPlan,
    FanOutTemplate,
    StepPlan,
    attempt_start,
    parse_attempt_id,
    plan_fan_out,
)
from cronloop.controllers.longrunning import LongRunningDetector
from cronloop.controllers.objects import ANNOTATIONS_KEY, CRONJOB_LABEL, json_time, typed
from cronloop.controllers.runstatus import (
    AttemptRecord,
    JobStatusRecord,
    SubJobStatusRecord,
    counts_record,
    parse_time,
    phase_of,
    step_of,
    with_fields,
)
from cronloop.controllers.subjobs import embedded_subjob
from cronloop.runtimes import (
    AttemptReport,
    Reason,
    RecoveryRecord,
    Runtime,
    UnknownAttemptError,
    signal_name,
)
from cronloop.store import Batch, BatchResult, NotFound, StoredObject
from cronloop.sync import Result

__all__ = ["LOST_RETRY_LIMIT", "JobController"]

logger = logging.getLogger(__name__)

#: How many times an AtLeastOnce sub-job is restarted after its attempt was Lost (a crash or a
#: vanished runtime), on top of its retry budget for ordinary failures.
LOST_RETRY_LIMIT = 3
_FAILURES = frozenset({Phase.FAILED, Phase.TIMED_OUT, Phase.LOST, Phase.CANCELLED})
#: Failures that back off before a retry (a lost attempt is retried at once).
_BACKED_OFF = _FAILURES - {Phase.LOST}
#: The reason an attempt is stopped with when its Job is gone (deleted directly, with its
#: CronJob, or pruned from the history), or when its sub-job is.
_JOB_DELETED = "JobDeleted"
#: How long an attempt recorded here may wait for its hand-over to the runtime before it is
#: taken as never started: well beyond a commit's latency under load (seconds in a burst).
START_LOST_AFTER = 60.0
#: How long a recorded start, or one given up on, is remembered (then it can no longer be
#: waiting for its commit, and nothing can still try to start it).
_STARTS_KEPT_SECONDS = 600.0
#: At most this many recorded starts are remembered (about 200 bytes each). A store that fails
#: for a while makes every due CronJob's retried pass record new sessions that no commit kept;
#: beyond the bound the oldest are forgotten, and a lost start among them waits for the next
#: restart's recovery, as before this guard. A burst holds far fewer at once: a start is
#: forgotten when it is handed over, right after its commit.
STARTS_KEPT = 65_536
_SUBJOB_DELETED = "SubJobDeleted"
_NO_COUNTS = counts_record([])
#: Distinct specs (and their steps) kept validated; one CronJob version's runs share theirs,
#: so this bounds the runs in flight whose specs are found without validating them again (a
#: burst of 10,000 runs of 10,000 CronJobs needs 10,000). An entry holds a reference to a
#: model its CronJob's template keeps anyway, or a small validated spec.
_SPECS_KEPT = 32_768
_STEP = TypeAdapter(Step)
#: Failed targets named in a failed Job's message (the others are counted), and the longest
#: reason given for one.
_FAILURES_SHOWN = 3
_DETAIL_LIMIT = 100


def _is_failure(attempt: AttemptRecord) -> bool:
    """A failure that spends the retry budget (a lost or interrupted attempt does not)."""
    phase = phase_of(attempt.get("phase"))
    if phase is Phase.LOST:
        return False
    if phase is Phase.CANCELLED and attempt.get("reason") == Reason.RUNTIME_SHUTDOWN:
        return False
    return phase in _FAILURES


def _failures(subs: Sequence[_Sub]) -> str:
    """``<target>: <why>`` of the first few sub-jobs that ended without success, and how many
    more: a failed run's message says which targets failed without a ``describe``."""
    shown: list[str] = []
    more = 0
    for sub in subs:
        phase = sub.phase
        if not phase.terminal or phase is Phase.SUCCEEDED:
            continue
        if len(shown) < _FAILURES_SHOWN:
            shown.append(f"{sub.spec.target}: {_why(sub, phase)}")
        else:
            more += 1
    if more:
        shown.append(f"and {more} more")
    return ", ".join(shown)


def _why(sub: _Sub, phase: Phase) -> str:
    """Why a sub-job ended in ``phase``: its last attempt's message, exit code or signal (a
    failure needs nothing more), else the phase and its reason."""
    attempts = sub.status.get("attempts")
    last: AttemptRecord = attempts[-1] if attempts else {}
    # A message can be a whole exception: its first line, clipped, keeps the job's short.
    said = (last.get("message") or "").strip().partition("\n")[0]
    if len(said) > _DETAIL_LIMIT:
        said = said[: _DETAIL_LIMIT - 3] + "..."
    code = last.get("exitCode")
    signum = last.get("signal")
    if not said and code:
        said = f"exited with code {code}"
    elif not said and signum:
        said = f"killed by {signal_name(signum)}"
    if said:
        return said if phase is Phase.FAILED else f"{phase.value} ({said})"
    reason = sub.status.get("reason") or last.get("reason")
    return f"{phase.value} ({reason})" if reason else phase.value


@dataclass(frozen=True, slots=True)
class _JobSpec:
    """What passes need from a Job's spec."""

    spec: JobSpec
    guarantee: Guarantee
    cancel: str | None


@dataclass(frozen=True, slots=True)
class _SubSpec:
    """What passes need from a SubJob's spec."""

    target: str
    shard_index: int | None
    prepare: StepPlan | None
    main: StepPlan
    retries: RetryPolicy

    def step(self, name: StepName) -> StepPlan:
        plan = self.prepare if name is StepName.PREPARE else self.main
        assert plan is not None
        return plan


@dataclass(frozen=True, slots=True)
class _StartFailed:
    """An attempt its runtime refused to start: applied like a report, in the job's loop."""

    subjob: str
    session: str
    message: str


_Inbound = AttemptReport | _StartFailed


def _forget_before(entries: OrderedDict[str, float], bound: float) -> None:
    """Drop the entries noted before ``bound`` (they were noted in time order), and the
    oldest beyond :data:`STARTS_KEPT`."""
    while entries and (len(entries) > STARTS_KEPT or next(iter(entries.values())) < bound):
        entries.popitem(last=False)


@dataclass(slots=True, eq=False)
class _Live:
    """An attempt handed to its runtime whose terminal report has not arrived yet."""

    start: AttemptStart
    #: Set when its Job or sub-job is gone: a start still under way stops it at once.
    stopping: str | None = None


@dataclass(slots=True, eq=False)
class _Sub:
    """One sub-job during a pass: as stored (None if the pass creates it) and as decided."""

    stored: StoredObject | None
    name: str
    spec: _SubSpec
    status: SubJobStatusRecord
    #: Kept in its Job's status (``subJob``: a one-target run), not stored on its own.
    embedded: bool = False

    @property
    def phase(self) -> Phase:
        return phase_of(self.status.get("phase"))

    @property
    def changed(self) -> bool:
        return self.stored is not None and self.status is not self.stored.status


@dataclass(slots=True, eq=False)
class _Pass:
    """What one pass over one job decided, before it is committed."""

    name: str
    obj: StoredObject
    job: _JobSpec
    status: JobStatusRecord
    #: The time of the pass, and its stored form.
    now: datetime
    stamp: str
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

    @property
    def phase(self) -> Phase:
        return phase_of(self.status.get("phase"))

    def writes(self) -> list[StoredObject]:
        """The status writes this pass decided (a status is replaced only to change it)."""
        writes = [
            sub.stored.with_status(cast(dict[str, Any], sub.status))
            for sub in self.subs
            if sub.stored is not None and sub.changed
        ]
        for sub in self.subs:
            if sub.embedded and sub.status is not self.status.get("subJob"):
                self.status = with_fields(self.status, subJob=sub.status)
        if self.status is not self.obj.status:
            writes.append(self.obj.with_status(cast(dict[str, Any], self.status)))
        return writes


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
        #: Attempts started and not yet reported ended, per job name, by attempt id: what
        #: must be stopped when the Job or the sub-job is found gone (the store keeps no
        #: trace of a deleted object's attempts, and the runtimes do not know jobs).
        self._live: dict[str, dict[str, _Live]] = {}
        #: Jobs that lost sub-jobs (or were deleted, maybe re-created since) while some of
        #: their attempts ran: their next pass looks for attempts nothing stored accounts for.
        self._audit: set[str] = set()
        #: Attempts recorded here (a fan-out or a dispatch) and not yet handed to their
        #: runtime, by session: when recorded (wall seconds). One whose record committed but
        #: whose hand-over never came (its commit raised after committing, say) would
        #: otherwise stay Pending for the life of the process; see :meth:`_unstarted`.
        self._recorded: OrderedDict[str, float] = OrderedDict()
        #: Sessions taken as never started: a late hand-over of one must not start it.
        self._abandoned: OrderedDict[str, float] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._warnings: dict[str, list[str]] = {}
        self._job_specs: ByIdentity[_JobSpec] = ByIdentity(_SPECS_KEPT)
        self._steps: ByIdentity[StepPlan] = ByIdentity(_SPECS_KEPT)
        self._retries: ByIdentity[RetryPolicy] = ByIdentity(_SPECS_KEPT)
        self._templates: ByIdentity[FanOutTemplate | None] = ByIdentity(_SPECS_KEPT)
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
        job = parse_attempt_id(report.attempt_id)[0]
        if report.phase in TERMINAL_PHASES:
            self._untrack(job, report.attempt_id, report.session)
        self._deliver(job, report)

    def _deliver(self, job: str, item: _Inbound) -> None:
        self._inbox.setdefault(job, []).append(item)
        self.enqueue_report(job)

    def waiting_reports(self) -> list[str]:
        """The jobs whose inbox holds reports not applied yet."""
        return [name for name, items in self._inbox.items() if items]

    # ---- deletions ----------------------------------------------------------------------------

    def deleted(self, job: str) -> bool:
        """Note that Job ``job``, or one of its sub-jobs, was deleted; returns whether its
        attempts still run here (the caller then enqueues the job: its pass stops them)."""
        if job not in self._live:
            return False
        self._audit.add(job)
        return True

    def _track(self, start: AttemptStart) -> _Live | None:
        self._recorded.pop(start.session, None)  # handed over: it starts or fails now
        if isinstance(start.spec, str):
            return None  # it fails before reaching a runtime
        live = _Live(start)
        self._live.setdefault(start.job, {})[start.spec.attempt_id] = live
        return live

    def _note_recorded(self, starts: Sequence[AttemptStart]) -> None:
        now = self._clock.now().timestamp()
        for start in starts:
            self._recorded[start.session] = now
        _forget_before(self._recorded, now - _STARTS_KEPT_SECONDS)

    def _unstarted(self, job_pass: _Pass, sub: _Sub) -> float | None:
        """For a sub-job whose attempt has not ended: if it was recorded here and never
        handed to its runtime within :data:`START_LOST_AFTER`, it never started, so it fails
        to start (reason StartFailed) and the retry policy takes it from there (a retry is
        safe even under AtMostOnce: nothing ran). Returns a wake-up delay while it may still
        be handed over."""
        session = sub.status.get("sessionId")
        recorded = None if session is None else self._recorded.get(session)
        if session is None or recorded is None:
            return None  # handed over (its reports settle it), or from a previous process
        now = job_pass.now.timestamp()
        if now - recorded < START_LOST_AFTER:
            return recorded + START_LOST_AFTER - now
        del self._recorded[session]
        self._abandoned[session] = now
        _forget_before(self._abandoned, now - _STARTS_KEPT_SECONDS)
        logger.warning(
            "attempt of %s was recorded %.0fs ago and never handed to its runtime; "
            "failing it as not started",
            sub.name,
            now - recorded,
        )
        sub.status = self._start_failed(
            sub.status,
            f"recorded but never handed to its runtime within {START_LOST_AFTER:g}s "
            "(its start was lost)",
            job_pass.stamp,
        )
        return self._drive(job_pass, sub)

    def _untrack(self, job: str, attempt_id: str, session: str) -> None:
        attempts = self._live.get(job)
        if attempts is None:
            return
        live = attempts.get(attempt_id)
        # Compared by session: a stale report must not untrack a newer incarnation's attempt.
        if live is not None and live.start.session == session:
            del attempts[attempt_id]
            if not attempts:
                del self._live[job]

    def _orphans(self, job: str, subs: Sequence[_Sub] | None) -> list[tuple[str, str, str]]:
        """Stop tracking the live attempts of ``job`` that nothing stored accounts for any
        more, and return them as stops: all of them if the Job is gone (``subs`` None), else
        those whose sub-job is gone or now records another session (a Job deleted and
        created again under its name)."""
        attempts = self._live.get(job)
        if not attempts:
            return []
        sessions = None if subs is None else {sub.name: sub.status.get("sessionId") for sub in subs}
        stops: list[tuple[str, str, str]] = []
        for ident, live in list(attempts.items()):
            start = live.start
            if sessions is None:
                reason = _JOB_DELETED
            elif start.subjob not in sessions:
                reason = _SUBJOB_DELETED
            elif sessions[start.subjob] != start.session:
                reason = _JOB_DELETED
            else:
                continue
            del attempts[ident]
            live.stopping = reason
            stops.append((start.runtime, ident, reason))
        if not attempts:
            del self._live[job]
        return stops

    async def _stop(self, runtime_name: str, ident: str, reason: str) -> None:
        runtime = self._runtimes.get(runtime_name)
        if runtime is not None:
            # Unknown here means it ran in a previous process (recovery settles it) or has not
            # reached its runtime yet (its start stops it).
            with contextlib.suppress(UnknownAttemptError):
                await runtime.cancel(ident, grace=self._kill_grace, reason=reason)

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
        stamp = json_time(now)
        passes: list[_Pass | None] = []
        outcomes: list[Result | Exception | None] = []
        #: Attempts of jobs or sub-jobs found gone: stopped whatever becomes of the commit.
        orphans: list[tuple[str, str, str]] = []
        for name in names:
            taken = self._inbox.pop(name, [])
            try:
                passes.append(await self._pass(name, taken, now, stamp, orphans))
                outcomes.append(None)
            except Exception as exc:
                self._restore(name, taken)
                passes.append(None)
                outcomes.append(exc)
        live = [(i, p) for i, p in enumerate(passes) if p is not None]
        committed = await self._commit([p for _, p in live])
        starts: list[AttemptStart] = []
        for (index, job_pass), done in zip(live, committed, strict=True):
            if isinstance(done, Exception):
                self._restore(job_pass.name, job_pass.taken)
                self._warnings.setdefault(job_pass.name, [])[:0] = job_pass.warnings
                outcomes[index] = done
                if isinstance(done, NotFound):
                    outcomes[index] = await self._vanished(job_pass, orphans)
                continue
            self._tell_finished(job_pass)
            outcomes[index] = await self._after_commit(job_pass)
            starts.extend(job_pass.starts)
        for stop in orphans:
            await self._stop(*stop)
        await self._start_all(starts)
        return outcomes

    async def _vanished(
        self, job_pass: _Pass, orphans: list[tuple[str, str, str]]
    ) -> Result | Exception:
        """A pass whose commit found an object gone that the cache still held (the change
        feed had not brought the deletion yet): look again at once, quietly, unless the Job
        itself is gone, which is the end of it."""
        name = job_pass.name
        try:
            await self._store.store.get("Job", name)
        except NotFound:
            self._store.cache.drop("Job", name)
            self._inbox.pop(name, None)
            self._audit.discard(name)
            orphans.extend(self._orphans(name, None))
            logger.debug("job %s was deleted during its pass", name)
            return Result()
        # A sub-job went: the commit dropped it from the cache, so the next pass omits it.
        self._audit.add(name)
        logger.debug("a sub-job of %s was deleted during its pass", name)
        return Result(requeue_after=0.0)

    def _restore(self, name: str, taken: list[_Inbound]) -> None:
        """Put reports back at the front of the inbox: the pass that took them failed."""
        if taken:
            self._inbox[name] = taken + self._inbox.get(name, [])

    async def _commit(self, passes: list[_Pass]) -> list[BatchResult | Exception]:
        """Commit every pass in one transaction, or each on its own if that fails."""
        plans = [(p.creates, p.writes()) for p in passes]
        if not any(creates or writes for creates, writes in plans):
            return [BatchResult() for _ in passes]
        try:
            result = await self._store.commit(
                Batch(
                    creates=[o for creates, _ in plans for o in creates],
                    status_updates=[o for _, writes in plans for o in writes],
                    keep_uids=True,
                )
            )
        except Exception as error:
            if len(passes) == 1:
                # The caller puts the pass's reports back and retries it (raising would lose
                # them).
                return [error]
            # One stale pass fails the whole transaction: commit each on its own (the store
            # groups these into one transaction again, each in its own savepoint).
            singles = await asyncio.gather(
                *(self._commit_one(creates, writes) for creates, writes in plans),
                return_exceptions=True,
            )
            results: list[BatchResult | Exception] = []
            for single in singles:
                if not isinstance(single, BatchResult | Exception):
                    raise single from error  # cancelled: not a failure of one job
                results.append(single)
            return results
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
        self, creates: list[StoredObject], writes: list[StoredObject]
    ) -> BatchResult:
        if not creates and not writes:
            return BatchResult()
        return await self._store.commit(
            Batch(creates=creates, status_updates=writes, keep_uids=True)
        )

    def _tell_finished(self, job_pass: _Pass) -> None:
        """Tell the CronJob whose run this committed pass finished (its active runs changed);
        a finished run's later passes (counts of sub-jobs settling) change nothing for it."""
        if job_pass.status is job_pass.obj.status or not job_pass.phase.terminal:
            return
        if phase_of(job_pass.obj.status.get("phase")).terminal:
            return
        owner = job_pass.obj.labels.get(CRONJOB_LABEL)
        if owner is not None:
            self.run_finished(owner)

    async def _after_commit(self, job_pass: _Pass) -> Result | None:
        """Act on a committed pass: stop what must stop (its starts are made by the batch)."""
        for stop in job_pass.stops:
            await self._stop(*stop)
        if job_pass.ended is not None:
            duration, success = job_pass.ended
            self._longrunning.finished(job_pass.name, duration, success=success)
        if not job_pass.wake or job_pass.phase.terminal:
            return None
        return Result(requeue_after=max(0.0, min(job_pass.wake)))

    async def _pass(
        self,
        name: str,
        taken: list[_Inbound],
        now: datetime,
        stamp: str,
        orphans: list[tuple[str, str, str]],
    ) -> _Pass | None:
        """Decide everything about job ``name`` (see the module docstring); write nothing,
        except into ``orphans``: attempts to stop because what they ran for is gone."""
        try:
            obj = await self._store.get("Job", name)
        except NotFound:
            # Deleted: its reports have nowhere to go, and whatever of it still runs stops.
            self._audit.discard(name)
            orphans.extend(self._orphans(name, None))
            return None
        job_pass = _Pass(
            name=name,
            obj=obj,
            job=self._job_spec(obj),
            status=cast(JobStatusRecord, obj.status),
            now=now,
            stamp=stamp,
            taken=taken,
        )
        for stored in await self._store.owned("SubJob", obj.uid):
            status = cast(SubJobStatusRecord, stored.status)
            job_pass.subs.append(_Sub(stored, stored.name, self._sub_spec(stored.spec), status))
        embedded = job_pass.status.get("subJob")
        if embedded is not None:
            template = self._template(obj, job_pass.job.spec)
            self._add_embedded(job_pass, template, embedded)
        if name in self._audit:
            self._audit.discard(name)
            orphans.extend(self._orphans(name, job_pass.subs))
        if taken:
            by_name = {sub.name: sub for sub in job_pass.subs}
            for item in taken:
                subjob = (
                    item.subjob
                    if isinstance(item, _StartFailed)
                    else parse_attempt_id(item.attempt_id)[1]
                )
                sub = by_name.get(subjob)
                if sub is None:
                    logger.debug("dropping a report for %s: no such sub-job of %s", item, name)
                    continue
                self._apply(sub, item, stamp)
        if job_pass.phase.terminal:
            # Late reports still complete the attempts' records, and the counts follow the
            # sub-jobs (settled by the pass that ended the job, or here); the phase stays.
            self._settle_finished(job_pass)
            return job_pass
        if not self.dispatching:
            return job_pass
        if not job_pass.subs:
            try:
                self._fan_out(job_pass)
            except ValueError as exc:
                self._finish(job_pass, Phase.FAILED, "InvalidTargets", str(exc))
                return job_pass
        self._decide(job_pass)
        await self._watch_duration(job_pass)
        return job_pass

    def _job_spec(self, obj: StoredObject, known: JobSpec | None = None) -> _JobSpec:
        """What passes need from ``obj``'s spec; ``known`` is its model if at hand."""

        def make() -> _JobSpec:
            spec = dict(obj.spec)
            annotations = spec.pop(ANNOTATIONS_KEY, {})
            return _JobSpec(
                spec=known if known is not None else JobSpec.model_validate(spec),
                guarantee=Guarantee(annotations.get(GUARANTEE_ANNOTATION, "AtLeastOnce")),
                cancel=annotations.get(CANCEL_ANNOTATION),
            )

        return self._job_specs.get(obj.spec, make)

    def _template(self, obj: StoredObject, spec: JobSpec) -> FanOutTemplate | None:
        """The fan-out template of ``obj``'s spec (``spec``, validated)."""
        return self._templates.get(obj.spec, lambda: FanOutTemplate.of(spec))

    def _add_embedded(
        self, job_pass: _Pass, template: FanOutTemplate | None, status: SubJobStatusRecord
    ) -> None:
        """Add the sub-job a one-target run keeps in its status to the pass."""
        if template is None or len(template.targets) != 1:
            raise ValueError("status.subJob: only a run with one target keeps its sub-job")
        target = template.targets[0]
        name = subjob_name(job_pass.name, target.target)
        job_pass.subs.append(_Sub(None, name, self._sub_spec(target.spec), status, True))

    def _sub_spec(self, spec: Mapping[str, Any]) -> _SubSpec:
        prepare = spec.get("prepare")
        retries = spec.get("retries")
        return _SubSpec(
            target=str(spec["target"]),
            shard_index=spec.get("shardIndex"),
            prepare=None if prepare is None else self._step(prepare, StepName.PREPARE),
            main=self._step(spec["main"], StepName.MAIN),
            retries=(
                RetryPolicy()
                if retries is None
                else self._retries.get(retries, lambda: RetryPolicy.model_validate(retries))
            ),
        )

    def _step(self, step: object, name: StepName) -> StepPlan:
        return self._steps.get(step, lambda: StepPlan.of(name, _STEP.validate_python(step)), name)

    def _decide(self, job_pass: _Pass) -> None:
        job = job_pass.job
        now = job_pass.now
        status = job_pass.status
        start_stamp = status.get("startTime") or job_pass.stamp
        start_time = parse_time(start_stamp) or now
        if job.cancel is not None:
            self._stop_all(job_pass, job_pass.subs, Phase.CANCELLED, job.cancel)
            self._finish(job_pass, Phase.CANCELLED, job.cancel, "the run was cancelled")
            return
        timeout = job.spec.timeout_seconds
        if timeout is not None:
            deadline = start_time.timestamp() + timeout
            if now.timestamp() >= deadline:
                self._stop_all(job_pass, job_pass.subs, Phase.TIMED_OUT, "DeadlineExceeded")
                self._finish(
                    job_pass,
                    Phase.TIMED_OUT,
                    "DeadlineExceeded",
                    f"the run exceeded its timeout of {timeout:g}s",
                )
                return
            job_pass.wake.append(deadline - now.timestamp())
        for sub in job_pass.subs:
            delay = self._drive(job_pass, sub)
            if delay is not None:
                job_pass.wake.append(delay)
        phases = [sub.phase for sub in job_pass.subs]
        phase = aggregate_phase(job.spec.success_policy, phases, job_pass.phase)
        failures = ""
        if phase.terminal:
            live = [sub for sub in job_pass.subs if not sub.phase.terminal]
            if phase is not Phase.SUCCEEDED and status.get("completionTime") is None:
                # Before the live ones are settled: they did not fail, the run ended under them.
                failures = _failures(job_pass.subs)
            if live:
                self._stop_all(job_pass, live, Phase.CANCELLED, "RunFinished")
                # Counted as settled: nothing moves them once the job has ended.
                phases = [sub.phase for sub in job_pass.subs]
        update: dict[str, Any] = {
            "phase": phase.value,
            "counts": counts_record(phases),
            "startTime": start_stamp,
        }
        if phase.terminal and status.get("completionTime") is None:
            done = sum(1 for p in phases if p is Phase.SUCCEEDED)
            update["completionTime"] = job_pass.stamp
            update["reason"] = "Completed" if phase is Phase.SUCCEEDED else "SuccessPolicyUnmet"
            summary = f"{done} of {len(phases)} targets succeeded"
            update["message"] = f"{summary}; {failures}" if failures else summary
        current = cast(dict[str, Any], status)
        if any(current.get(key) != value for key, value in update.items()):
            job_pass.status = with_fields(status, **update)

    # ---- fan-out ------------------------------------------------------------------------------

    def fan_out(
        self, template: FanOutTemplate, run: StoredObject, prepared: FanOutPlan | None = None
    ) -> FanOutPlan:
        """The sub-jobs of ``run`` (whose uid is set) from ``template``, each with its first
        attempt recorded and a uid of its own, for the run's creator to write in the run's
        own transaction and then hand to :meth:`start_planned`; ``prepared`` if
        :meth:`prepare` made them ahead for this run.
        """
        plan = self.prepare(template, run) if prepared is None else prepared
        self._note_recorded(plan.starts)
        return plan

    def prepare(self, template: FanOutTemplate, run: StoredObject) -> FanOutPlan:
        """:meth:`fan_out` made ahead of the run: its attempts are not recorded yet.

        What the template already knows (the run's spec, its sub-jobs' steps) is noted for
        the run's passes, which would otherwise validate it again from the stored JSON.
        """
        self._job_spec(run, template.spec)
        self._templates.put(run.spec, template)
        for target in template.targets:
            self._steps.put(target.spec["main"], target.main, StepName.MAIN)
            if target.prepare is not None:
                self._steps.put(target.spec["prepare"], target.prepare, StepName.PREPARE)
            self._retries.put(target.spec["retries"], target.retries)
        return plan_fan_out(template, job=run.name, job_uid=run.uid, log_dir=self._log_dir)

    async def start_planned(
        self, runs: Sequence[tuple[FanOutPlan, StoredObject, Sequence[StoredObject]]]
    ) -> None:
        """Start the first attempts of runs created with their sub-jobs: for each, its plan,
        the run as stored and its sub-jobs as stored (in the plan's order)."""
        self._bind_loop()
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
        template = self._template(job_pass.obj, job_pass.job.spec)
        if template is None:
            raise ValueError("a selector's targets are resolved against agents at run time")
        plan = self.fan_out(template, job_pass.obj)
        if plan.embedded is not None:
            status = cast(SubJobStatusRecord, plan.embedded)
            job_pass.status = with_fields(job_pass.status, subJob=status)
            self._add_embedded(job_pass, template, status)
        for stored in plan.objects:
            status = cast(SubJobStatusRecord, stored.status)
            job_pass.creates.append(stored)
            job_pass.subs.append(_Sub(None, stored.name, self._sub_spec(stored.spec), status))
        job_pass.starts.extend(plan.starts)

    # ---- driving one sub-job -------------------------------------------------------------------

    def _drive(self, job_pass: _Pass, sub: _Sub) -> float | None:
        """Move one sub-job on: first attempt, next step, or a retry. Returns a wake-up delay."""
        if sub.phase.terminal:
            return None
        attempts = sub.status.get("attempts", [])
        if not attempts:
            first = StepName.PREPARE if sub.spec.prepare is not None else StepName.MAIN
            self._dispatch(job_pass, sub, first, 1)
            return None
        last = attempts[-1]
        last_phase = phase_of(last.get("phase"))
        if not last_phase.terminal:
            return self._unstarted(job_pass, sub)
        step = step_of(last.get("step"))
        number = int(last.get("number", len(attempts)))
        if last_phase is Phase.SUCCEEDED:
            if step is StepName.PREPARE:
                self._dispatch(job_pass, sub, StepName.MAIN, number + 1)
            else:
                self._settle(sub, Phase.SUCCEEDED, "Completed", "", job_pass.stamp)
            return None
        retry, why = self._may_retry(attempts, sub.spec, job_pass.job.guarantee)
        if not retry:
            reason = last.get("reason") or why
            self._settle(sub, last_phase, reason, last.get("message") or why, job_pass.stamp)
            return None
        failures = sum(1 for a in attempts if phase_of(a.get("phase")) in _BACKED_OFF)
        delay = (
            sub.spec.retries.delay(max(1, failures)).total_seconds()
            if last_phase is not Phase.LOST
            else 0.0
        )
        now = job_pass.now
        finished = parse_time(last.get("finishTime")) or now
        due = finished.timestamp() + delay
        if due > now.timestamp():
            return due - now.timestamp()
        self._dispatch(job_pass, sub, step, number + 1)
        return None

    @staticmethod
    def _may_retry(
        attempts: Sequence[AttemptRecord], spec: _SubSpec, guarantee: Guarantee
    ) -> tuple[bool, str]:
        last = attempts[-1]
        last_phase = phase_of(last.get("phase"))
        interrupted = (
            last_phase is Phase.CANCELLED and last.get("reason") == Reason.RUNTIME_SHUTDOWN
        )
        if last_phase is Phase.CANCELLED and not interrupted:
            return False, "the attempt was cancelled"
        if last_phase is Phase.LOST or interrupted:
            if guarantee is Guarantee.AT_MOST_ONCE:
                return False, "the attempt was lost and AtMostOnce forbids starting it again"
            lost = sum(
                1 for a in attempts if phase_of(a.get("phase")) in _FAILURES and not _is_failure(a)
            )
            return lost <= LOST_RETRY_LIMIT, f"lost {lost} times"
        failures = sum(1 for a in attempts if _is_failure(a))
        return failures <= spec.retries.limit, f"failed {failures} times"

    def _dispatch(self, job_pass: _Pass, sub: _Sub, step: StepName, number: int) -> None:
        """Record attempt ``number`` (a fresh session); it is handed to its runtime once the
        record commits."""
        record, start = attempt_start(
            sub.spec.step(step),
            job=job_pass.name,
            subjob=sub.name,
            target=sub.spec.target,
            shard_index=sub.spec.shard_index,
            number=number,
            log_dir=self._log_dir,
        )
        attempt: AttemptRecord = {
            "number": number,
            "step": step.value,
            "phase": Phase.PENDING.value,
            "runtime": record,
        }
        sub.status = with_fields(
            sub.status,
            attempts=[*sub.status.get("attempts", []), attempt],
            sessionId=start.session,
            reportSequence=0,
        )
        job_pass.starts.append(start)
        self._note_recorded((start,))

    async def _start_all(self, starts: Sequence[AttemptStart]) -> None:
        """Start attempts side by side: a runtime's start returns once the attempt runs,
        which for some takes a turn of the loop."""
        if len(starts) == 1:
            await self._start(starts[0], self._track(starts[0]))
        elif starts:
            # All tracked before any starts: a deletion seen meanwhile finds every one.
            tracked = [self._track(start) for start in starts]
            await asyncio.gather(
                *(self._start(start, live) for start, live in zip(starts, tracked, strict=True))
            )

    async def _start(self, start: AttemptStart, live: _Live | None) -> None:
        """Hand a recorded attempt to its runtime; a start that fails fails the attempt."""
        spec = start.spec
        try:
            runtime = self._runtimes.get(start.runtime)
            if runtime is None:
                raise ValueError(f"no runtime named {start.runtime!r} is configured")
            if isinstance(spec, str):
                raise ValueError(spec)
            if live is not None and live.stopping is not None:
                return  # its job went before its turn came: it never starts
            if self._abandoned.pop(start.session, None) is not None:
                # Taken as never started (and failed or retried) while its commit hung.
                self._untrack(start.job, spec.attempt_id, start.session)
                return
            await runtime.start(spec, self.on_report)
        except Exception as exc:  # a start that fails is the attempt's failure, not ours
            ident = spec if isinstance(spec, str) else spec.attempt_id
            if not isinstance(spec, str):
                self._untrack(start.job, spec.attempt_id, start.session)
            logger.warning("attempt %s could not start: %s", ident, exc)
            self._deliver(start.job, _StartFailed(start.subjob, start.session, str(exc)))
            return
        if live is not None and live.stopping is not None:
            # Its job went while it started: the stop may have come before the runtime
            # knew the attempt, so it is asked again (a second stop does nothing).
            await self._stop(start.runtime, spec.attempt_id, live.stopping)

    # ---- applying reports ---------------------------------------------------------------------

    def _apply(self, sub: _Sub, item: _Inbound, stamp: str) -> None:
        status = sub.status
        session = status.get("sessionId")
        if isinstance(item, _StartFailed):
            if session == item.session and status.get("attempts"):
                sub.status = self._start_failed(status, item.message, stamp)
            return
        if (
            session is None
            or item.session != session
            or item.seq <= status.get("reportSequence", 0)
        ):
            logger.debug("dropping stale report %s seq %d", item.attempt_id, item.seq)
            return
        sub.status = self._applied(status, item, stamp)

    @staticmethod
    def _start_failed(status: SubJobStatusRecord, message: str, stamp: str) -> SubJobStatusRecord:
        attempts = status["attempts"]
        failed = with_fields(
            attempts[-1],
            phase=Phase.FAILED.value,
            reason="StartFailed",
            message=message,
            startTime=stamp,
            finishTime=stamp,
        )
        return with_fields(
            status,
            attempts=[*attempts[:-1], failed],
            reportSequence=status.get("reportSequence", 0) + 1,
        )

    @staticmethod
    def _applied(
        status: SubJobStatusRecord, report: AttemptReport, stamp: str
    ) -> SubJobStatusRecord:
        attempts = status["attempts"]
        last = attempts[-1]
        last_phase = phase_of(last.get("phase"))
        phase = report.phase if can_advance(last_phase, report.phase) else last_phase
        runtime = dict(last.get("runtime", {}))
        if report.pid is not None:
            runtime["pid"] = report.pid
        if report.process_start_time is not None:
            runtime["processStartTime"] = report.process_start_time
        if report.log_dropped_bytes:
            runtime["logDroppedBytes"] = report.log_dropped_bytes
        # Attempt times are when this controller observed them, on its own clock: retries and
        # deadlines are computed from them, and a runtime's clock (a remote agent's, later)
        # may be skewed.
        attempt = with_fields(
            last,
            phase=phase.value,
            startTime=last.get("startTime") or stamp,
            finishTime=stamp if phase.terminal else None,
            exitCode=report.exit_code,
            signal=report.signal,
            reason=report.reason,
            message=report.message or None,
            runtime=runtime,
        )
        step = step_of(last.get("step"))
        current = phase_of(status.get("phase"))
        proposed = current
        if report.phase is Phase.RUNNING:
            proposed = Phase.PREPARING if step is StepName.PREPARE else Phase.RUNNING
        elif report.phase is Phase.SUCCEEDED:
            proposed = Phase.PREPARED if step is StepName.PREPARE else Phase.SUCCEEDED
        new_phase = proposed if can_advance(current, proposed) else current
        update: dict[str, Any] = {
            "attempts": [*attempts[:-1], attempt],
            "reportSequence": report.seq,
            "phase": new_phase.value,
            "startTime": status.get("startTime") or attempt.get("startTime"),
        }
        if new_phase.terminal and status.get("completionTime") is None:
            update["completionTime"] = attempt.get("finishTime")
            update["reason"] = report.reason
        return with_fields(status, **update)

    # ---- endings ----------------------------------------------------------------------------

    @staticmethod
    def _settle(sub: _Sub, phase: Phase, reason: str, message: str, stamp: str) -> None:
        current = sub.phase
        if not can_advance(current, phase) or current == phase:
            return
        sub.status = with_fields(
            sub.status,
            phase=phase.value,
            reason=reason,
            message=message or None,
            completionTime=sub.status.get("completionTime") or stamp,
        )

    def _stop_all(self, job_pass: _Pass, subs: Sequence[_Sub], phase: Phase, reason: str) -> None:
        """Settle the live sub-jobs in ``phase`` and stop their attempts after the commit."""
        for sub in subs:
            if sub.phase.terminal:
                continue
            attempts = sub.status.get("attempts", [])
            last = attempts[-1] if attempts else None
            if last is not None and not phase_of(last.get("phase")).terminal:
                runtime = last.get("runtime", {})
                ident = str(runtime.get("attemptId", ""))
                if ident:
                    job_pass.stops.append((str(runtime.get("runtime", "")), ident, reason))
            self._settle(sub, phase, reason, "", job_pass.stamp)

    @staticmethod
    def _finish(job_pass: _Pass, phase: Phase, reason: str, message: str) -> None:
        """End the job (its sub-jobs are settled first: the counts are final)."""
        status = job_pass.status
        job_pass.status = with_fields(
            status,
            phase=phase.value,
            reason=reason,
            message=message,
            counts=counts_record([sub.phase for sub in job_pass.subs]),
            startTime=status.get("startTime") or job_pass.stamp,
            completionTime=job_pass.stamp,
        )

    def _settle_finished(self, job_pass: _Pass) -> None:
        """Keep an ended job's sub-jobs and counts in line with its phase, which stays."""
        live = [sub for sub in job_pass.subs if not sub.phase.terminal]
        if live:  # ended by a process that stopped before settling them
            self._stop_all(job_pass, live, Phase.CANCELLED, "RunFinished")
        counts = counts_record([sub.phase for sub in job_pass.subs])
        # No counts stored reads as all zeros (a skip record's), as the model's default does.
        if job_pass.status.get("counts", _NO_COUNTS) != counts:
            job_pass.status = with_fields(job_pass.status, counts=counts)

    # ---- long-running runs -----------------------------------------------------------------

    async def _watch_duration(self, job_pass: _Pass) -> None:
        """Warn once when a run goes on longer than expected (into the job's warnings), and
        wake the job when its own threshold comes."""
        name = job_pass.name
        phase = job_pass.phase
        now = job_pass.now
        status = job_pass.status
        start_time = parse_time(status.get("startTime")) or now
        warned = bool(job_pass.obj.status.get("warnings"))
        detector = self._longrunning
        if phase.terminal:
            duration = (now - start_time).total_seconds()
            job_pass.ended = (duration, phase is Phase.SUCCEEDED)
            job_pass.warnings = tuple(self._warnings.pop(name, ()))
        elif phase.rank >= Phase.PREPARING.rank:
            ref = status.get("cronJob") or {}
            series = str(ref.get("name") or name)
            await self._load_history(series, ref.get("uid"))
            threshold = detector.started(
                name,
                cronjob=series,
                started_at=start_time.timestamp(),
                expected=job_pass.job.spec.expected_duration_seconds,
                warned=warned,
            )
            for warning in detector.check(now.timestamp()):
                logger.warning("%s", warning.message)
                self.long_running_warnings += 1
                self._warnings.setdefault(warning.run_id, []).append(warning.message)
                if warning.run_id != name:
                    self.enqueue(warning.run_id)
            job_pass.warnings = tuple(self._warnings.pop(name, ()))
            if threshold is not None and not warned and not job_pass.warnings:
                due = start_time.timestamp() + threshold.seconds
                job_pass.wake.append(max(0.0, due - now.timestamp()))
        if job_pass.warnings:
            job_pass.status = with_fields(
                job_pass.status,
                warnings=[*job_pass.status.get("warnings", []), *job_pass.warnings],
            )

    async def _load_history(self, cronjob: str, uid: object) -> None:
        """Seed a CronJob's duration history from its stored successful runs, once."""
        if cronjob in self._histories_loaded:
            return
        self._histories_loaded.add(cronjob)
        if isinstance(uid, str) and uid:
            runs = await self._store.owned("Job", uid)
        else:
            runs = (await self._store.list("Job", labels={CRONJOB_LABEL: cronjob})).items
        history = self._longrunning.history(cronjob)
        finished = []
        for run in runs:
            status = run.status
            start = parse_time(status.get("startTime"))
            end = parse_time(status.get("completionTime"))
            if phase_of(status.get("phase")) is Phase.SUCCEEDED and start and end:
                finished.append((end, (end - start).total_seconds()))
        finished.sort()
        for _, duration in finished[-history.size :]:
            history.record(duration)

    # ---- crash recovery ---------------------------------------------------------------------

    async def recover(self) -> int:
        """Settle attempts a previous process left running; returns how many were found.

        Each runtime reports its records Lost; the reports go to their jobs' inboxes like any
        other report, and the jobs are enqueued.
        """
        self._bind_loop()

        def unsettled(status: object) -> bool:
            # Read from the stored dict: only these are worth a model (a store holds
            # mostly finished runs, and validating each costs start-up time).
            return isinstance(status, dict) and not phase_of(status.get("phase")).terminal

        subs = [
            *(s for s in (await self._store.list("SubJob")).items if unsettled(s.status)),
            *(
                kept
                for job in (await self._store.list("Job")).items
                if unsettled(job.status.get("subJob"))
                and (kept := embedded_subjob(job)) is not None
            ),
        ]
        pending: dict[str, list[tuple[SubJob, RecoveryRecord]]] = {}
        for obj in subs:
            sub = typed(obj, SubJob)
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

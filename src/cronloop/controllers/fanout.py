"""Fan-out: a run's sub-jobs, each with its first attempt recorded, built from a template.

Every run of one CronJob has the same job spec, so its sub-jobs differ from the last run's
only in names, uids, session ids and log paths. Building them through the typed models
(construct, validate, copy, dump) for every run cost more than anything else a run did, so a
:class:`FanOutTemplate` is made once per job spec, from the typed models themselves: its parts
are exactly what the models dump, and :func:`plan_fan_out` only fills in what is new. The
template is also how a Job created by hand is fanned out, so there is one way to do it.

:func:`attempt_start` is the one place that names an attempt (its id, session, log path) and
says how its runtime will start it, for first attempts and for retries alike.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cronloop.api import (
    Attempt,
    InlineStep,
    JobSpec,
    ProcessStep,
    RetryPolicy,
    Step,
    StepName,
    SubJobStatus,
    subjob_name,
)
from cronloop.controllers.objects import JOB_LABEL, dump_model
from cronloop.runtimes import AttemptSpec, InlineSettings, ProcessSettings, StepSettings
from cronloop.store import StoredObject, new_uid

__all__ = [
    "AttemptStart",
    "FanOutPlan",
    "FanOutTemplate",
    "StepPlan",
    "attempt_id",
    "attempt_start",
    "new_session",
    "parse_attempt_id",
    "plan_fan_out",
    "step_settings",
]


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


def new_session() -> str:
    """A fresh attempt session id: 32 hex digits (a random uid without its dashes)."""
    return new_uid().replace("-", "")


def step_settings(step: Step) -> StepSettings | str:
    """How a runtime runs ``step``, or why no runtime can (the attempt then fails)."""
    try:
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
    except ValueError as exc:  # settings a runtime cannot take fail the attempt
        return str(exc)


@dataclass(frozen=True, slots=True)
class AttemptStart:
    """A recorded attempt to hand to its runtime once the record is committed."""

    job: str
    subjob: str
    session: str
    runtime: str
    #: What the runtime gets, or why the attempt cannot start (it then fails).
    spec: AttemptSpec | str


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What every attempt of one step shares: how it runs, its limits."""

    step: StepName
    runtime: str
    settings: StepSettings | str
    timeout: float | None
    log_limit: int | None

    @classmethod
    def of(cls, name: StepName, step: Step) -> StepPlan:
        limit = step.log_limit_bytes if isinstance(step, ProcessStep) else None
        return cls(name, step.runtime, step_settings(step), step.timeout_seconds, limit)


def attempt_start(
    step: StepPlan,
    *,
    job: str,
    subjob: str,
    target: str,
    shard_index: int | None,
    number: int,
    log_dir: Path,
) -> tuple[dict[str, Any], AttemptStart]:
    """Name attempt ``number`` of ``subjob`` (a fresh session) and say how to start it.

    Returns the attempt's ``runtime`` record (stored with the attempt: session, id, runtime,
    log path) and the start to make once that record is committed.
    """
    session = new_session()
    ident = attempt_id(job, subjob, number)
    # One path built from text: joining parts parses each of them again.
    log_path = Path(f"{log_dir}/{job}/{subjob}.{number}.{step.step.value}.log")
    record = {
        "session": session,
        "attemptId": ident,
        "runtime": step.runtime,
        "logPath": str(log_path),
    }
    settings = step.settings
    spec: AttemptSpec | str = settings if isinstance(settings, str) else ""
    if not isinstance(settings, str):
        try:
            spec = AttemptSpec(
                attempt_id=ident,
                session=session,
                job=job,
                subjob=subjob,
                target=target,
                step=step.step.value,
                attempt=number,
                settings=settings,
                log_path=log_path,
                shard_index=shard_index,
                timeout=step.timeout,
                **({"log_limit": step.log_limit} if step.log_limit else {}),
            )
        except ValueError as exc:
            spec = str(exc)
    return record, AttemptStart(job, subjob, session, step.runtime, spec)


@dataclass(frozen=True, slots=True)
class _Target:
    """One target's sub-job, minus what each run fills in."""

    target: str
    shard_index: int | None
    #: The stored spec, without ``job`` (the run).
    spec: dict[str, Any]
    #: The stored status with attempt 1 recorded; its session and runtime record are per run.
    status: dict[str, Any]
    first: StepPlan
    #: How each step runs, and the retry policy: what the Job controller would otherwise
    #: validate again from ``spec``.
    prepare: StepPlan | None
    main: StepPlan
    retries: RetryPolicy


@dataclass(frozen=True, slots=True)
class FanOutTemplate:
    """The sub-jobs of any run of one job spec (see the module docstring)."""

    #: The spec the template was made from.
    spec: JobSpec
    targets: tuple[_Target, ...]

    @classmethod
    def of(cls, spec: JobSpec, stored: dict[str, Any] | None = None) -> FanOutTemplate | None:
        """The template of ``spec``, or None when its targets are a selector (known only at
        run time, against the agents).

        ``stored`` is ``spec`` as stored (:func:`dump_model`), when the caller has it already.
        The sub-jobs' stored specs are put together from its parts rather than dumped from a
        ``SubJobSpec`` per target: a step dumps the same wherever it sits, and building and
        validating the models was most of the cost of a one-shot CronJob's first (and only)
        run. tests/controllers/test_fanout.py checks the result against the models.
        """
        if spec.targets.selector is not None:
            return None
        names = spec.targets.resolve()
        if stored is None:
            stored = dump_model(spec)
        parts = {key: stored[key] for key in _STEP_KEYS if key in stored}
        sharded = spec.targets.shards is not None
        main = StepPlan.of(StepName.MAIN, spec.main)
        prepare = None if spec.prepare is None else StepPlan.of(StepName.PREPARE, spec.prepare)
        first = prepare or main
        status = _first_status(first.step)
        targets = []
        for index, target in enumerate(names):
            stored_spec: dict[str, Any] = {"target": target}
            if sharded:
                stored_spec["shardIndex"] = index
            stored_spec.update(parts)
            targets.append(
                _Target(
                    target=target,
                    shard_index=index if sharded else None,
                    spec=stored_spec,
                    status=status,
                    first=first,
                    prepare=prepare,
                    main=main,
                    retries=spec.retries,
                )
            )
        return cls(spec, tuple(targets))


#: What a sub-job's stored spec takes from its job's, in the order ``SubJobSpec`` dumps them.
_STEP_KEYS = ("prepare", "main", "retries")


@functools.cache
def _first_status(first: StepName) -> dict[str, Any]:
    """The stored status of a new sub-job whose attempt 1 runs step ``first``, but for the
    session and runtime record each run fills in (shared: never changed in place)."""
    status = SubJobStatus(
        attempts=(Attempt(number=1, step=first),), session_id="x", report_sequence=0
    )
    return dump_model(status)


@dataclass(frozen=True)
class FanOutPlan:
    """A run's sub-jobs, ready to be created (each with a uid of its own and its first
    attempt recorded), and how to start those attempts once the creation committed."""

    objects: list[StoredObject]
    starts: list[AttemptStart]
    #: The sub-job's status of a one-target run, for the Job's ``status.subJob`` (its
    #: ``objects`` are then empty; see the module docstring).
    embedded: dict[str, Any] | None = None


def plan_fan_out(template: FanOutTemplate, *, job: str, job_uid: str, log_dir: Path) -> FanOutPlan:
    """The sub-jobs of run ``job`` (whose uid is ``job_uid``) from ``template``."""
    objects = []
    starts = []
    ref = {"name": job, "uid": job_uid}
    labels = {JOB_LABEL: job}
    for target in template.targets:
        name = subjob_name(job, target.target)
        record, start = attempt_start(
            target.first,
            job=job,
            subjob=name,
            target=target.target,
            shard_index=target.shard_index,
            number=1,
            log_dir=log_dir,
        )
        skeleton = target.status
        status = {
            **skeleton,
            "attempts": [{**skeleton["attempts"][0], "runtime": record}],
            "sessionId": start.session,
        }
        starts.append(start)
        if len(template.targets) == 1:
            return FanOutPlan([], starts, status)
        objects.append(
            StoredObject(
                "SubJob",
                name,
                spec={**target.spec, "job": ref},
                status=status,
                labels=labels,
                owner_uid=job_uid,
                uid=new_uid(),
            )
        )
    return FanOutPlan(objects, starts)

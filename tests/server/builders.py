"""Request bodies and stored objects the server and CLI tests share."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cronloop.api import (
    Attempt,
    Job,
    ObjectMeta,
    ObjectRef,
    Phase,
    StepName,
    SubJob,
    SubJobSpec,
    SubJobStatus,
)
from cronloop.controllers.objects import JOB_LABEL, to_stored, typed
from cronloop.store import Store, StoredObject

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def step(argv: list[str] | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"runtime": "process", "argv": argv or ["echo", "hello"]}
    if env:
        body["env"] = env
    return body


def cronjob_body(
    name: str = "nightly",
    *,
    schedule: str = "0 3 * * *",
    env: dict[str, str] | None = None,
    suspend: bool = False,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A CronJob as a user writes it (camelCase JSON)."""
    return {
        "apiVersion": "cronloop.dev/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "schedule": schedule,
            "suspend": suspend,
            "jobTemplate": {"targets": ["eu", "us"], "main": step(env=env)},
        },
    }


def job_body(
    name: str = "adhoc",
    *,
    targets: list[str] | None = None,
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Job as a user writes it."""
    return {
        "apiVersion": "cronloop.dev/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"targets": targets or ["eu", "us"], "main": step(env=env)},
    }


async def add_subjob(
    store: Store,
    job: StoredObject,
    target: str,
    *,
    attempts: list[tuple[Phase, Path | None]] | None = None,
    recorded: Sequence[Attempt] = (),
) -> StoredObject:
    """Store ``job``'s SubJob for ``target`` holding the attempts ``recorded`` as given (any
    step, any field), then the given ``attempts`` ``(phase, log path)`` of its main step.

    The sub-job's phase is its last attempt's (Prepared once a prepare step succeeded),
    Pending without attempts. This is what the Job controller writes when it fans out and
    dispatches; the server only reads it.
    """
    parent = typed(job, Job)
    made = tuple(recorded) + tuple(
        Attempt(
            number=index,
            step=StepName.MAIN,
            phase=phase,
            runtime={"logPath": str(path)} if path is not None else {},
        )
        for index, (phase, path) in enumerate(attempts or [], start=len(recorded) + 1)
    )
    sub = SubJob(
        metadata=ObjectMeta(name=f"{job.name}-{target}", labels={JOB_LABEL: job.name}),
        spec=SubJobSpec(
            job=ObjectRef(name=job.name, uid=job.uid),
            target=target,
            prepare=parent.spec.prepare,
            main=parent.spec.main,
        ),
        status=SubJobStatus(phase=_phase_after(made), attempts=made),
    )
    return await store.create(to_stored(sub, owner_uid=job.uid))


def _phase_after(attempts: Sequence[Attempt]) -> Phase:
    if not attempts:
        return Phase.PENDING
    last = attempts[-1]
    if last.phase is Phase.SUCCEEDED and last.step is StepName.PREPARE:
        return Phase.PREPARED
    return last.phase


async def set_subjob_status(store: Store, name: str, **fields: Any) -> StoredObject:
    """Write ``fields`` (snake_case SubJobStatus fields) into SubJob ``name``'s status."""
    obj = await store.get("SubJob", name)
    sub = typed(obj, SubJob)
    status = sub.status.model_copy(update=fields)
    return await store.update_status(
        to_stored(sub.model_copy(update={"status": status}), owner_uid=obj.owner_uid)
    )


async def set_attempt_phase(store: Store, subjob: str, number: int, phase: Phase) -> None:
    """Move attempt ``number`` of ``subjob`` (and the sub-job) to ``phase``."""
    sub = typed(await store.get("SubJob", subjob), SubJob)
    attempts = tuple(
        a.model_copy(update={"phase": phase}) if a.number == number else a
        for a in sub.status.attempts
    )
    await set_subjob_status(store, subjob, attempts=attempts, phase=phase)


async def set_job_status(store: Store, name: str, **fields: Any) -> StoredObject:
    """Write ``fields`` (snake_case JobStatus fields) into Job ``name``'s status."""
    obj = await store.get("Job", name)
    job = typed(obj, Job)
    status = job.status.model_copy(update=fields)
    return await store.update_status(
        to_stored(job.model_copy(update={"status": status}), owner_uid=obj.owner_uid)
    )


async def keep_subjob(
    store: Store, job: StoredObject, attempts: list[tuple[Phase, Path | None]]
) -> StoredObject:
    """Record the main-step ``attempts`` ``(phase, log path)`` of one-target Job ``job`` in
    its own status (``status.subJob``), as the Job controller keeps a one-target run's
    sub-job; returns the Job as stored."""
    made = tuple(
        Attempt(
            number=index,
            step=StepName.MAIN,
            phase=phase,
            runtime={"logPath": str(path)} if path is not None else {},
        )
        for index, (phase, path) in enumerate(attempts, start=1)
    )
    kept = SubJobStatus(phase=_phase_after(made), attempts=made)
    return await set_job_status(store, job.name, sub_job=kept)

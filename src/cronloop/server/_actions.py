"""The action endpoints: trigger a CronJob now, suspend or resume it, cancel a Job.

Each action is a small write the controllers already understand: a new Job owned by the
CronJob (like a scheduled run, without a scheduled time or a unique key), a compare-and-set of
``spec.suspend`` (re-read and retried when another writer got there first), or the cancel
annotation the Job controller acts on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter

from cronloop.api import (
    MAX_NAME_LENGTH,
    CronJob,
    Job,
    JobStatus,
    ObjectMeta,
    ObjectRef,
)
from cronloop.controllers.cronjob import CANCEL_ANNOTATION, GUARANTEE_ANNOTATION
from cronloop.controllers.objects import CRONJOB_LABEL, to_stored, typed
from cronloop.server._context import ServerContext
from cronloop.server._errors import ApiError
from cronloop.server._present import present_stored
from cronloop.store import AlreadyExists, Conflict, StoredObject

__all__ = ["CANCELLED_BY_USER", "action_router", "manual_run_name"]

#: The value of the cancel annotation when a user cancels a Job through the API.
CANCELLED_BY_USER = "CancelledByUser"
_CAS_TRIES = 10
_NAME_TRIES = 20


def manual_run_name(cronjob: str, when: datetime, index: int = 1) -> str:
    """``<cronjob>-manual-<unix seconds>`` (``-<index>`` appended from the second one on).

    The CronJob part is shortened when the whole would not fit a 63-character name.
    """
    suffix = f"-manual-{int(when.timestamp())}" + (f"-{index}" if index > 1 else "")
    return cronjob[: MAX_NAME_LENGTH - len(suffix)].rstrip("-") + suffix


async def _set_suspend(ctx: ServerContext, name: str, suspend: bool) -> StoredObject:
    store = ctx.store
    for _ in range(_CAS_TRIES):
        current = await store.get("CronJob", name)
        cronjob = typed(current, CronJob)
        if cronjob.spec.suspend == suspend:
            return current
        updated = cronjob.model_copy(
            update={"spec": cronjob.spec.model_copy(update={"suspend": suspend})}
        )
        try:
            return await store.update(to_stored(updated))
        except Conflict:
            continue
    raise ApiError(409, f'CronJob "{name}" kept changing; try again')


def action_router(ctx: ServerContext) -> APIRouter:
    """The routes of the actions over ``ctx.store``."""
    router = APIRouter()
    store = ctx.store

    @router.post("/apis/cronloop.dev/v1/cronjobs/{name}/trigger", status_code=201)
    async def trigger(name: str) -> Any:
        """Create a run of the CronJob now, whatever its schedule and ``suspend``."""
        current = await store.get("CronJob", name)
        cronjob = typed(current, CronJob)
        now = ctx.clock()
        for index in range(1, _NAME_TRIES + 1):
            job = Job(
                metadata=ObjectMeta(
                    name=manual_run_name(name, now, index),
                    labels={CRONJOB_LABEL: name},
                    annotations={GUARANTEE_ANNOTATION: cronjob.spec.guarantee.value},
                ),
                spec=cronjob.spec.job_template,
                status=JobStatus(cron_job=ObjectRef(name=name, uid=current.uid)),
            )
            try:
                created = await store.create(to_stored(job, owner_uid=current.uid))
            except AlreadyExists:
                continue  # triggered more than once within this second
            return present_stored(created)
        raise ApiError(409, f'CronJob "{name}": too many manual runs within one second')

    @router.post("/apis/cronloop.dev/v1/cronjobs/{name}/suspend")
    async def suspend(name: str) -> Any:
        """Stop scheduling new runs (running ones go on)."""
        return present_stored(await _set_suspend(ctx, name, True))

    @router.post("/apis/cronloop.dev/v1/cronjobs/{name}/resume")
    async def resume(name: str) -> Any:
        """Schedule runs again (missed times follow the CronJob's catch-up policy)."""
        return present_stored(await _set_suspend(ctx, name, False))

    @router.post("/apis/cronloop.dev/v1/jobs/{name}/cancel")
    async def cancel(name: str) -> Any:
        """Ask the Job controller to cancel the Job; 409 if it has already finished (in any
        terminal phase, ``Cancelled`` included)."""
        for _ in range(_CAS_TRIES):
            current = await store.get("Job", name)
            job = typed(current, Job)
            # Checked first: a Job its cancel already ended has finished like any other, and
            # cancelling a finished Job is an error whichever way it ended.
            if job.status.phase.terminal:
                raise ApiError(409, f'Job "{name}" has already finished ({job.status.phase.value})')
            if CANCEL_ANNOTATION in job.metadata.annotations:
                return present_stored(current)  # asked already, not acted on yet
            annotations = {**job.metadata.annotations, CANCEL_ANNOTATION: CANCELLED_BY_USER}
            updated = job.model_copy(
                update={"metadata": job.metadata.model_copy(update={"annotations": annotations})}
            )
            try:
                return present_stored(
                    await store.update(
                        to_stored(
                            updated, owner_uid=current.owner_uid, unique_key=current.unique_key
                        )
                    )
                )
            except Conflict:
                continue
        raise ApiError(409, f'Job "{name}" kept changing; try again')

    return router

"""The SubJob resource: one target of a Job, with its attempts and its report cursor.

Reports from runtimes arrive stamped with the attempt's session id and a sequence number; a
report is applied only if it belongs to the current session and is newer than the last one
applied (:meth:`SubJobStatus.is_stale_report`), so a late or duplicated report can never move
a sub-job back (the seed-000 bug).
"""

from __future__ import annotations

import enum
from typing import Literal, Self

from pydantic import Field, JsonValue, model_validator

from cronloop.api import job as _job
from cronloop.api.job import RetryPolicy, Step
from cronloop.api.meta import API_VERSION, ApiModel, AwareDatetime, ObjectMeta, ObjectRef
from cronloop.api.phase import Phase

__all__ = ["Attempt", "StepName", "SubJob", "SubJobSpec", "SubJobStatus"]


class StepName(enum.StrEnum):
    """Which step of a sub-job an attempt runs."""

    PREPARE = "prepare"
    MAIN = "main"


class Attempt(ApiModel):
    """One try of one step; a retry is a new attempt with the next number."""

    number: int = Field(ge=1)
    step: StepName
    phase: Phase = Phase.PENDING
    start_time: AwareDatetime | None = None
    finish_time: AwareDatetime | None = None
    exit_code: int | None = None
    signal: int | None = Field(default=None, ge=1)
    reason: str | None = None
    message: str | None = None
    runtime: dict[str, JsonValue] = Field(default_factory=dict)
    """Runtime-specific details (session id, pid, host): opaque to the API layer."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (
            self.start_time is not None
            and self.finish_time is not None
            and self.finish_time < self.start_time
        ):
            raise ValueError("finishTime must not be before startTime")
        return self


class SubJobSpec(ApiModel):
    """The job and target this sub-job belongs to, and the steps it runs (copied from the job)."""

    job: ObjectRef
    target: str = Field(min_length=1)
    shard_index: int | None = Field(default=None, ge=0)
    prepare: Step | None = None
    main: Step
    retries: RetryPolicy = Field(default_factory=RetryPolicy)


class SubJobStatus(ApiModel):
    """Observed state of a sub-job; ``session_id``/``report_sequence`` order its reports."""

    phase: Phase = Phase.PENDING
    attempts: tuple[Attempt, ...] = ()
    session_id: str | None = None
    """Session of the current attempt; reports from any other session are stale."""
    report_sequence: int = Field(default=0, ge=0)
    """Sequence number of the last report applied (reports start at 1)."""
    start_time: AwareDatetime | None = None
    completion_time: AwareDatetime | None = None
    reason: str | None = None
    message: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        numbers = [a.number for a in self.attempts]
        if numbers != sorted(set(numbers)):
            raise ValueError("attempts must have distinct, increasing numbers")
        return self

    def is_stale_report(self, session_id: str, sequence: int) -> bool:
        """Whether a report stamped ``(session_id, sequence)`` must be discarded."""
        if self.session_id is None or session_id != self.session_id:
            return True
        return sequence <= self.report_sequence


class SubJob(ApiModel):
    """``apiVersion: cronloop.dev/v1``, ``kind: SubJob``; named ``<job>-<target>``."""

    api_version: Literal["cronloop.dev/v1"] = API_VERSION
    kind: Literal["SubJob"] = "SubJob"
    metadata: ObjectMeta
    spec: SubJobSpec
    status: SubJobStatus = Field(default_factory=SubJobStatus)


# JobStatus.sub_job names SubJobStatus, which is defined here, after the job module.
_job.JobStatus.model_rebuild(_types_namespace={"SubJobStatus": SubJobStatus})
_job.Job.model_rebuild(_types_namespace={"SubJobStatus": SubJobStatus})

"""The CronJob resource: a schedule, the policies for late and overlapping runs, a job template.

Its controller creates one :class:`~cronloop.api.job.Job` per scheduled time, named by
:func:`run_name` so that two schedulers creating the same run collide on a unique key, and asks
:func:`cronloop.api.missed.plan_missed_runs` what to do with the times it finds due.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from cronloop.api._errors import field_error
from cronloop.api.job import JobSpec
from cronloop.api.meta import (
    API_VERSION,
    ApiModel,
    AwareDatetime,
    ObjectMeta,
    ObjectRef,
    validate_label_name,
)
from cronloop.api.schedule import EPOCH, Schedule, ScheduleError, parse_time_zone

__all__ = [
    "DEFAULT_MAX_CATCH_UP_RUNS",
    "DEFAULT_MISFIRE_THRESHOLD_SECONDS",
    "MAX_CRONJOB_NAME_LENGTH",
    "CatchUp",
    "ConcurrencyPolicy",
    "CronJob",
    "CronJobSpec",
    "CronJobStatus",
    "Guarantee",
    "run_name",
]

#: ``<cronjob>-<unix seconds>`` must fit a 63-character label; unix seconds have 10 digits
#: until the year 2286.
MAX_CRONJOB_NAME_LENGTH = 52
DEFAULT_MAX_CATCH_UP_RUNS = 100
#: A run started at most this late is on time, not missed (Quartz's misfire threshold).
DEFAULT_MISFIRE_THRESHOLD_SECONDS = 60


class ConcurrencyPolicy(enum.StrEnum):
    """What to do when a run is due while an earlier run of the same CronJob is active."""

    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class CatchUp(enum.StrEnum):
    """Which missed scheduled times (later than the misfire threshold) still start."""

    NONE = "None"
    LATEST = "Latest"
    ALL = "All"


class Guarantee(enum.StrEnum):
    """Whether a scheduled time may be skipped (AtMostOnce) or may be run twice (AtLeastOnce)."""

    AT_LEAST_ONCE = "AtLeastOnce"
    AT_MOST_ONCE = "AtMostOnce"


class CronJobSpec(ApiModel):
    """When to run, in which zone, what to do with late and overlapping runs, and what to run."""

    schedule: str
    time_zone: str = "UTC"
    suspend: bool = False
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    starting_deadline_seconds: int | None = Field(default=None, ge=1)
    misfire_threshold_seconds: int = Field(default=DEFAULT_MISFIRE_THRESHOLD_SECONDS, ge=1)
    catch_up: CatchUp = CatchUp.LATEST
    max_catch_up_runs: int = Field(default=DEFAULT_MAX_CATCH_UP_RUNS, ge=1, le=10_000)
    guarantee: Guarantee = Guarantee.AT_LEAST_ONCE
    successful_jobs_history_limit: int = Field(default=3, ge=0)
    failed_jobs_history_limit: int = Field(default=1, ge=0)
    expected_duration_seconds: float | None = Field(default=None, gt=0)
    job_template: JobSpec

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        try:
            Schedule.parse(value, "UTC")  # the syntax does not depend on the zone
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("time_zone")
    @classmethod
    def _check_time_zone(cls, value: str) -> str:
        try:
            parse_time_zone(value)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None
        return value

    def parsed_schedule(self, *, anchor: datetime = EPOCH) -> Schedule:
        """The schedule in the CronJob's zone (``anchor`` starts ``@every`` intervals)."""
        return Schedule.parse(self.schedule, self.time_zone, anchor=anchor)


class CronJobStatus(ApiModel):
    """Observed state of a CronJob, written by its controller."""

    last_schedule_time: AwareDatetime | None = None
    """The latest scheduled time the controller has dealt with (started or recorded skipped)."""
    last_successful_time: AwareDatetime | None = None
    active: tuple[ObjectRef, ...] = ()
    started_runs: int = Field(default=0, ge=0)
    skipped_runs: int = Field(default=0, ge=0)
    missed_runs: int = Field(default=0, ge=0)


class CronJob(ApiModel):
    """``apiVersion: cronloop.dev/v1``, ``kind: CronJob``; names are labels of <= 52 chars."""

    api_version: Literal["cronloop.dev/v1"] = API_VERSION
    kind: Literal["CronJob"] = "CronJob"
    metadata: ObjectMeta
    spec: CronJobSpec
    status: CronJobStatus = Field(default_factory=CronJobStatus)

    @field_validator("metadata")
    @classmethod
    def _check_name(cls, metadata: ObjectMeta) -> ObjectMeta:
        try:
            validate_label_name(metadata.name, max_length=MAX_CRONJOB_NAME_LENGTH)
        except ValueError as exc:  # reported at metadata.name, not metadata
            raise field_error("ObjectMeta", ("name",), str(exc), metadata.name) from None
        return metadata


def run_name(cronjob: str, scheduled_time: datetime) -> str:
    """The name of ``cronjob``'s run for ``scheduled_time``: ``<cronjob>-<unix seconds>``.

    Unix seconds (not minutes, as Kubernetes uses) keep seconds schedules distinct, and an
    instant rather than a wall-clock time keeps DST-repeated local times distinct.
    """
    if scheduled_time.tzinfo is None:
        raise ValueError("scheduled_time must be timezone-aware")
    return f"{cronjob}-{int(scheduled_time.timestamp())}"

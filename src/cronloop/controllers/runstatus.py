"""The statuses the controllers write, as the JSON the store holds, and their transitions.

The Job controller changes a sub-job's status once or twice per report and a job's status
once per pass, and the CronJob controller a CronJob's twice per run, thousands of times a
second in a burst. Doing that through the typed models
(validate, copy, copy again, dump) cost more than the rest of a run, so the controller works
on the stored form itself: the dicts below, typed with :class:`~typing.TypedDict`, changed
only by the functions of this module, which always build new dicts (a stored dict is shared
with the cache and must never change). The typed models stay the schema: every shape made
here is what :func:`~cronloop.controllers.objects.dump_model` makes of the same model (unset
fields left out, camelCase keys, times in the models' JSON form), and the tests check it
against the models (tests/controllers/test_runstatus.py).

Hand-written because it is a fast path over the models' own schema, not a second schema: no
library turns a pydantic model's JSON form into cheap immutable updates.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, TypedDict, TypeVar

from cronloop.api import Phase, PhaseCounts, StepName
from cronloop.controllers.objects import dump_model

__all__ = [
    "AttemptRecord",
    "CronJobStatusRecord",
    "JobStatusRecord",
    "SubJobStatusRecord",
    "counts_record",
    "parse_time",
    "phase_of",
    "step_of",
    "with_fields",
]


class AttemptRecord(TypedDict, total=False):
    """The stored form of :class:`~cronloop.api.Attempt`."""

    number: int
    step: str
    phase: str
    startTime: str
    finishTime: str
    exitCode: int
    signal: int
    reason: str
    message: str
    runtime: dict[str, Any]


class SubJobStatusRecord(TypedDict, total=False):
    """The stored form of :class:`~cronloop.api.SubJobStatus`."""

    phase: str
    attempts: list[AttemptRecord]
    sessionId: str
    reportSequence: int
    startTime: str
    completionTime: str
    reason: str
    message: str


class JobStatusRecord(TypedDict, total=False):
    """The stored form of :class:`~cronloop.api.JobStatus`."""

    phase: str
    counts: dict[str, int]
    startTime: str
    completionTime: str
    reason: str
    message: str
    scheduledTime: str
    cronJob: dict[str, Any]
    warnings: list[str]
    subJob: SubJobStatusRecord


class CronJobStatusRecord(TypedDict, total=False):
    """The stored form of :class:`~cronloop.api.CronJobStatus`."""

    lastScheduleTime: str
    lastSuccessfulTime: str
    active: list[dict[str, Any]]
    startedRuns: int
    skippedRuns: int
    missedRuns: int


_PHASES = {phase.value: phase for phase in Phase}
_STEPS = {step.value: step for step in StepName}


def phase_of(value: object, default: Phase = Phase.PENDING) -> Phase:
    """The phase a stored ``phase`` field names (``default`` when unset)."""
    if value is None:
        return default
    found = _PHASES.get(value) if isinstance(value, str) else None
    return found if found is not None else Phase(str(value))  # raises on a bad value


def step_of(value: object) -> StepName:
    """The step a stored attempt's ``step`` field names."""
    found = _STEPS.get(value) if isinstance(value, str) else None
    return found if found is not None else StepName(str(value))  # raises on a bad value


def parse_time(value: object) -> datetime | None:
    """A stored time (the models' JSON form of an aware datetime), or None when unset."""
    return datetime.fromisoformat(value) if isinstance(value, str) else None


_Record = TypeVar(
    "_Record", AttemptRecord, SubJobStatusRecord, JobStatusRecord, CronJobStatusRecord
)


def with_fields(record: _Record, **fields: Any) -> _Record:
    """A copy of ``record`` with ``fields`` set; a field set to None is left out, as the
    models' dump leaves out unset fields."""
    copied: dict[str, Any] = dict(record)
    for key, value in fields.items():
        if value is None:
            copied.pop(key, None)
        else:
            copied[key] = value
    return copied  # type: ignore[return-value]


@functools.lru_cache(maxsize=4096)
def _counts(counts: tuple[int, ...]) -> dict[str, int]:
    return dump_model(PhaseCounts(**dict(zip(_COUNT_FIELDS, counts, strict=True))))


_COUNT_FIELDS = tuple(PhaseCounts.model_fields)


def counts_record(phases: list[Phase]) -> dict[str, int]:
    """The stored ``counts`` of a job whose sub-jobs are in ``phases`` (a shared dict: do not
    change it)."""
    counts = PhaseCounts.of(phases)
    return _counts(tuple(getattr(counts, name) for name in _COUNT_FIELDS))

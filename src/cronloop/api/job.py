"""The Job resource: one run of work, fanned out to targets, with its steps and policies.

A Job is created by a CronJob for one scheduled time, or directly (by hand, by the CLI). Its
``spec.targets`` says how it fans out (named targets, ``shards: N`` or an agent selector); each
target becomes a :class:`~cronloop.api.subjob.SubJob` that runs the optional ``prepare`` step
and then the ``main`` step. The Job's phase is the aggregate of its sub-jobs under
``successPolicy`` (see :mod:`cronloop.api.aggregate`).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    Field,
    JsonValue,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from cronloop.api._errors import field_error, problem, with_problems

if TYPE_CHECKING:
    # subjob imports this module; the field's type is resolved there (model_rebuild).
    from cronloop.api.subjob import SubJobStatus
from cronloop.api.meta import (
    API_VERSION,
    ApiModel,
    AwareDatetime,
    ObjectMeta,
    ObjectRef,
    check_label,
    validate_label_name,
)
from cronloop.api.phase import Phase

__all__ = [
    "RESERVED_ENV_PREFIX",
    "InlineStep",
    "Job",
    "JobSpec",
    "JobStatus",
    "LabelSelector",
    "PhaseCounts",
    "ProcessStep",
    "RetryPolicy",
    "Step",
    "SuccessMode",
    "SuccessPolicy",
    "Targets",
    "subjob_name",
]

#: Environment variables the process runtime sets itself; a step's ``env`` may not use them.
RESERVED_ENV_PREFIX = "CRONLOOP_"

_CALLABLE_RE = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
)
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

TargetName = Annotated[str, AfterValidator(validate_label_name)]


class _StepBase(ApiModel):
    timeout_seconds: float | None = Field(default=None, gt=0)
    """Deadline of one attempt of this step; the attempt is stopped and ends ``TimedOut``."""


class InlineStep(_StepBase):
    """A step run by the inline runtime: ``callable`` (``"module:function"``) with ``kwargs``."""

    runtime: Literal["inline"]
    callable: str
    kwargs: dict[str, JsonValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not _CALLABLE_RE.fullmatch(self.callable):
            raise ValueError(
                f"callable must look like 'package.module:function', got {self.callable!r}"
            )
        for key in self.kwargs:
            if not key.isidentifier():
                raise ValueError(f"kwargs: {key!r} is not a valid argument name")
        if "ctx" in self.kwargs:
            raise ValueError("kwargs may not contain 'ctx': the runtime passes it")
        return self


class ProcessStep(_StepBase):
    """A step run by the process runtime: ``argv`` executed directly, or ``command`` in a shell.

    A command string is only accepted with ``shell: true`` so that nobody runs a shell by
    accident (quoting, globbing and injection are then the author's explicit choice).
    """

    runtime: Literal["process"]
    argv: tuple[str, ...] | None = None
    command: str | None = None
    shell: bool = False
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = None
    log_limit_bytes: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.argv is None) == (self.command is None):
            raise ValueError("exactly one of argv (a list) or command (a string) is required")
        if self.command is not None:
            if not self.shell:
                raise ValueError("command strings run in a shell and require shell: true")
            if not self.command.strip():
                raise ValueError("command must not be empty")
        if self.argv is not None:
            if self.shell:
                raise ValueError("shell: true requires command (a string), not argv")
            if not self.argv or not self.argv[0]:
                raise ValueError("argv must be a non-empty list starting with the program")
        for text in (*(self.argv or ()), self.command or ""):
            if "\x00" in text:
                raise ValueError("argv and command may not contain NUL characters")
        for name, value in self.env.items():
            if not _ENV_NAME_RE.fullmatch(name):
                raise ValueError(f"env: {name!r} is not a valid variable name")
            if name.startswith(RESERVED_ENV_PREFIX):
                raise ValueError(f"env: {name!r} is reserved (the runtime sets CRONLOOP_*)")
            if "\x00" in value:  # the value is never echoed: it may be a secret
                raise ValueError(f"env: the value of {name!r} contains a NUL character")
        return self

    @property
    def effective_argv(self) -> tuple[str, ...]:
        """What gets executed: ``argv``, or ``/bin/sh -c command`` for shell steps."""
        if self.command is not None:
            return ("/bin/sh", "-c", self.command)
        assert self.argv is not None
        return self.argv


Step = Annotated[InlineStep | ProcessStep, Field(discriminator="runtime")]
"""A step's settings, chosen by its ``runtime`` field."""


class LabelSelector(ApiModel):
    """Agents whose labels include every ``matchLabels`` pair (executed by the agent layer)."""

    match_labels: dict[str, str] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        for key, value in self.match_labels.items():
            check_label(key, value)
        return self


class Targets(ApiModel):
    """Where a job fans out: exactly one of ``names``, ``shards`` or ``selector``.

    In YAML a plain list is accepted as shorthand for ``names``: ``targets: [eu, us, ap]``.
    """

    # Emptiness is checked by _check_names, not by min_length: pydantic-core applies
    # min_length to the items that validated, so one bad name in a one-name list would also
    # be reported as an empty list.
    names: tuple[TargetName, ...] | None = Field(default=None, max_length=10_000)
    shards: int | None = Field(default=None, ge=1, le=10_000)
    selector: LabelSelector | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, list | tuple):
            return {"names": data}
        return data

    @field_validator("names")
    @classmethod
    def _check_names(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if names is None:
            return names
        if not names:
            raise ValueError("must list at least one target")
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"target names must be unique (repeated: {', '.join(dupes)})")
        return names

    @model_validator(mode="after")
    def _check(self) -> Self:
        given = [n for n in ("names", "shards", "selector") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "exactly one of names, shards or selector is required"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def count(self) -> int | None:
        """How many targets, or ``None`` for a selector (known only when agents are matched)."""
        if self.names is not None:
            return len(self.names)
        return self.shards

    def resolve(self) -> tuple[str, ...]:
        """The target names: ``names``, or ``shard-0 .. shard-(N-1)`` for shards.

        A selector resolves at run time against live agents, so it is refused here.
        """
        if self.names is not None:
            return self.names
        if self.shards is not None:
            return tuple(f"shard-{i}" for i in range(self.shards))
        raise ValueError("a selector's targets are resolved against agents at run time")


def _default_targets() -> Targets:
    return Targets(names=("default",))


class RetryPolicy(ApiModel):
    """Retries of a failed attempt with exponential backoff.

    The delay before retry ``k`` (1-based) is ``backoffSeconds * 2**(k-1)`` capped at
    ``maxBackoffSeconds``.
    """

    limit: int = Field(default=0, ge=0, le=1000)
    backoff_seconds: float = Field(default=10.0, ge=0)
    max_backoff_seconds: float = Field(default=300.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.max_backoff_seconds < self.backoff_seconds:
            raise field_error(
                "RetryPolicy",
                ("maxBackoffSeconds",),
                f"must be at least backoffSeconds ({self.backoff_seconds:g}), "
                f"got {self.max_backoff_seconds:g}",
                self.max_backoff_seconds,
            )
        return self

    def delay(self, retry: int) -> timedelta:
        """Delay before retry number ``retry`` (1 for the first retry)."""
        if retry < 1:
            raise ValueError(f"retry must be >= 1, got {retry}")
        exponent = min(retry - 1, 64)  # past 2**64 the cap has long been reached
        return timedelta(seconds=min(self.backoff_seconds * 2**exponent, self.max_backoff_seconds))


class SuccessMode(enum.StrEnum):
    """How many sub-jobs must succeed for the job to succeed."""

    ALL = "All"
    ANY = "Any"
    AT_LEAST = "AtLeast"


class SuccessPolicy(ApiModel):
    """``All``, ``Any`` or ``AtLeast`` ``n`` sub-jobs must succeed; ``"All"`` is a shorthand."""

    mode: SuccessMode = SuccessMode.ALL
    n: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"mode": data}
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.mode is SuccessMode.AT_LEAST and self.n is None:
            raise field_error("SuccessPolicy", ("n",), "required when mode is AtLeast", None)
        if self.mode is not SuccessMode.AT_LEAST and self.n is not None:
            raise field_error(
                "SuccessPolicy",
                ("n",),
                f"only allowed when mode is AtLeast (mode is {self.mode})",
                self.n,
            )
        return self

    def required(self, total: int) -> int:
        """How many of ``total`` sub-jobs must succeed."""
        if self.mode is SuccessMode.ALL:
            return total
        if self.mode is SuccessMode.ANY:
            return 1
        assert self.n is not None
        return self.n


class JobSpec(ApiModel):
    """What a job runs, where, and under which time limits and policies."""

    targets: Targets = Field(default_factory=_default_targets)
    prepare: Step | None = None
    main: Step
    timeout_seconds: float | None = Field(default=None, gt=0)
    """Active deadline of the whole job, from its start; it then ends ``TimedOut``."""
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    success_policy: SuccessPolicy = Field(default_factory=SuccessPolicy)
    expected_duration_seconds: float | None = Field(default=None, gt=0)

    @model_validator(mode="wrap")
    @classmethod
    def _check(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        # A wrap validator, so that n is checked against the targets even when another field
        # (the targets themselves: a repeated name) is invalid: every problem is reported.
        try:
            spec = handler(data)
        except ValidationError as exc:
            if not isinstance(data, Mapping):
                raise
            policy = _alone(data, ("successPolicy", "success_policy"), SuccessPolicy)
            n = policy.n if policy is not None else None
            raise with_problems(exc, _n_problems(n, _declared_count(data))) from None
        problems = _n_problems(spec.success_policy.n, spec.targets.count)
        if problems:
            raise ValidationError.from_exception_data("JobSpec", problems)
        return spec


_Model = TypeVar("_Model", bound=ApiModel)


def _alone(
    data: Mapping[str, Any], keys: tuple[str, ...], default: Callable[[], _Model]
) -> _Model | None:
    """A field (under one of ``keys``) of a spec that failed to validate, validated alone.

    ``None`` if it is invalid too; an absent field is its ``default``.
    """
    for key in keys:
        if key in data:
            value = data[key]
            break
    else:
        return default()
    model = type(default())
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _declared_count(data: Mapping[str, Any]) -> int | None:
    """How many targets a spec that failed to validate declares, if that is clear.

    Valid targets have their count. Invalid named targets (a repeated or malformed name) still
    declare one target per listed name; a bad shard count or an ambiguous mix declares none.
    """
    targets = _alone(data, ("targets",), _default_targets)
    if targets is not None:
        return targets.count
    value = data.get("targets")
    if isinstance(value, Mapping) and set(value) == {"names"}:
        value = value["names"]
    if isinstance(value, list | tuple) and value:
        return len(value)
    return None


def _n_problems(n: int | None, count: int | None) -> list[InitErrorDetails]:
    if n is None or count is None or n <= count:
        return []
    message = f"must not exceed the number of targets ({count}), got {n}"
    return [problem(("successPolicy", "n"), message, n)]


class PhaseCounts(ApiModel):
    """How many sub-jobs (targets) are in each phase."""

    pending: int = Field(default=0, ge=0)
    preparing: int = Field(default=0, ge=0)
    prepared: int = Field(default=0, ge=0)
    running: int = Field(default=0, ge=0)
    succeeded: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    cancelled: int = Field(default=0, ge=0)
    timed_out: int = Field(default=0, ge=0)
    lost: int = Field(default=0, ge=0)
    skipped: int = Field(default=0, ge=0)

    @classmethod
    def of(cls, phases: list[Phase] | tuple[Phase, ...]) -> PhaseCounts:
        """Count ``phases`` (equal counts are one shared, immutable object)."""
        counts = dict.fromkeys(Phase, 0)
        for phase in phases:
            counts[phase] += 1
        return _counts_of(tuple(counts.values()))

    def get(self, phase: Phase) -> int:
        """The count of ``phase``."""
        value: int = getattr(self, _COUNT_FIELD[phase])
        return value

    @property
    def total(self) -> int:
        """The number of sub-jobs counted."""
        return sum(self.get(p) for p in Phase)


@functools.lru_cache(maxsize=4096)
def _counts_of(counts: tuple[int, ...]) -> PhaseCounts:
    """The counts of each phase, in :class:`Phase` order."""
    return PhaseCounts(**{_COUNT_FIELD[p]: n for p, n in zip(Phase, counts, strict=True)})


_COUNT_FIELD: dict[Phase, str] = {
    Phase.PENDING: "pending",
    Phase.PREPARING: "preparing",
    Phase.PREPARED: "prepared",
    Phase.RUNNING: "running",
    Phase.SUCCEEDED: "succeeded",
    Phase.FAILED: "failed",
    Phase.CANCELLED: "cancelled",
    Phase.TIMED_OUT: "timed_out",
    Phase.LOST: "lost",
    Phase.SKIPPED: "skipped",
}


class JobStatus(ApiModel):
    """Observed state of a job, written by its controller."""

    phase: Phase = Phase.PENDING
    counts: PhaseCounts = Field(default_factory=PhaseCounts)
    start_time: AwareDatetime | None = None
    completion_time: AwareDatetime | None = None
    reason: str | None = None
    message: str | None = None
    scheduled_time: AwareDatetime | None = None
    """The CronJob's scheduled time this run is for (cron runs only)."""
    cron_job: ObjectRef | None = None
    """The CronJob that created this run (cron runs only)."""
    warnings: tuple[str, ...] = ()
    """Warnings raised while the run went on, e.g. that it runs longer than expected."""
    sub_job: SubJobStatus | None = None
    """The status of the run's one sub-job, when it fans out to a single target: such a run
    is stored as this one record, and its SubJob is shown made from it (see
    :mod:`cronloop.controllers.fanout`)."""


class Job(ApiModel):
    """A run: ``apiVersion: cronloop.dev/v1``, ``kind: Job``. Names are DNS-1123 labels."""

    api_version: Literal["cronloop.dev/v1"] = API_VERSION
    kind: Literal["Job"] = "Job"
    metadata: ObjectMeta
    spec: JobSpec
    status: JobStatus = Field(default_factory=JobStatus)

    @field_validator("metadata")
    @classmethod
    def _check_name(cls, metadata: ObjectMeta) -> ObjectMeta:
        try:
            validate_label_name(metadata.name)
        except ValueError as exc:  # reported at metadata.name, not metadata
            raise field_error("ObjectMeta", ("name",), str(exc), metadata.name) from None
        return metadata


def subjob_name(job: str, target: str) -> str:
    """The name of ``job``'s sub-job for ``target`` (``<job>-<target>``)."""
    return f"{job}-{target}"

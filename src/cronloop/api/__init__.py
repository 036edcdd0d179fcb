"""cronloop's resource types and the rules on them; no I/O.

- :mod:`~cronloop.api.phase`: the run lifecycle and its forward-only transitions.
- :mod:`~cronloop.api.meta`: object metadata and the pydantic base of every API type.
- :mod:`~cronloop.api.cronjob`, :mod:`~cronloop.api.job`, :mod:`~cronloop.api.subjob`: the
  resources; :mod:`~cronloop.api.resource` loads them from YAML and dumps them.
- :mod:`~cronloop.api.schedule`: cron and interval schedules with explicit DST rules.
- :mod:`~cronloop.api.missed`: what to start and what to skip after downtime.
- :mod:`~cronloop.api.aggregate`: a job's phase from its sub-jobs' phases.
"""

from __future__ import annotations

from cronloop.api.aggregate import (
    aggregate_phase,
)
from cronloop.api.cronjob import (
    DEFAULT_MAX_CATCH_UP_RUNS,
    DEFAULT_MISFIRE_THRESHOLD_SECONDS,
    MAX_CRONJOB_NAME_LENGTH,
    CatchUp,
    ConcurrencyPolicy,
    CronJob,
    CronJobSpec,
    CronJobStatus,
    Guarantee,
    run_name,
)
from cronloop.api.job import (
    RESERVED_ENV_PREFIX,
    InlineStep,
    Job,
    JobSpec,
    JobStatus,
    LabelSelector,
    PhaseCounts,
    ProcessStep,
    RetryPolicy,
    Step,
    SuccessMode,
    SuccessPolicy,
    Targets,
    subjob_name,
)
from cronloop.api.meta import (
    API_VERSION,
    MAX_NAME_LENGTH,
    MAX_SUBDOMAIN_LENGTH,
    ApiModel,
    AwareDatetime,
    ObjectMeta,
    ObjectRef,
    OwnerReference,
    check_label,
    validate_label_name,
    validate_name,
)
from cronloop.api.missed import (
    DEFAULT_MAX_LISTED,
    MissedRunPlan,
    SkippedRun,
    SkipReason,
    plan_for_cronjob,
    plan_missed_runs,
)
from cronloop.api.phase import (
    TERMINAL_PHASES,
    Phase,
    PhaseRegression,
    advance,
    can_advance,
)
from cronloop.api.resource import (
    KINDS,
    Resource,
    ResourceError,
    dump,
    dump_yaml,
    load_resources,
    load_sources,
    parse_resource,
)
from cronloop.api.schedule import (
    EPOCH,
    MACROS,
    Schedule,
    ScheduleError,
    parse_duration,
    parse_time_zone,
)
from cronloop.api.subjob import (
    Attempt,
    StepName,
    SubJob,
    SubJobSpec,
    SubJobStatus,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_MAX_CATCH_UP_RUNS",
    "DEFAULT_MAX_LISTED",
    "DEFAULT_MISFIRE_THRESHOLD_SECONDS",
    "EPOCH",
    "KINDS",
    "MACROS",
    "MAX_CRONJOB_NAME_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_SUBDOMAIN_LENGTH",
    "RESERVED_ENV_PREFIX",
    "TERMINAL_PHASES",
    "ApiModel",
    "Attempt",
    "AwareDatetime",
    "CatchUp",
    "ConcurrencyPolicy",
    "CronJob",
    "CronJobSpec",
    "CronJobStatus",
    "Guarantee",
    "InlineStep",
    "Job",
    "JobSpec",
    "JobStatus",
    "LabelSelector",
    "MissedRunPlan",
    "ObjectMeta",
    "ObjectRef",
    "OwnerReference",
    "Phase",
    "PhaseCounts",
    "PhaseRegression",
    "ProcessStep",
    "Resource",
    "ResourceError",
    "RetryPolicy",
    "Schedule",
    "ScheduleError",
    "SkipReason",
    "SkippedRun",
    "Step",
    "StepName",
    "SubJob",
    "SubJobSpec",
    "SubJobStatus",
    "SuccessMode",
    "SuccessPolicy",
    "Targets",
    "advance",
    "aggregate_phase",
    "can_advance",
    "check_label",
    "dump",
    "dump_yaml",
    "load_resources",
    "load_sources",
    "parse_duration",
    "parse_resource",
    "parse_time_zone",
    "plan_for_cronjob",
    "plan_missed_runs",
    "run_name",
    "subjob_name",
    "validate_label_name",
    "validate_name",
]

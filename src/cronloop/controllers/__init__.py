"""Controllers: reconcile loops that drive actual state towards desired state.

The CronJob controller creates runs on schedule, exactly once each; the Job controller fans runs
out into sub-jobs, starts their attempts, and keeps every status in order; the manager runs both
against a store with a change feed, periodic resync and crash recovery.
"""

from __future__ import annotations

from cronloop.controllers.admission import (
    AT_LEAST_ONCE,
    AT_MOST_ONCE,
    HOST_OVERLOADED,
    Admission,
    AdmissionController,
    AdmissionLimit,
    AdmissionLimits,
    AdmissionStatistics,
    Admit,
    Delay,
    HostLoad,
    HostSampler,
    PsutilSampler,
    Skip,
)
from cronloop.controllers.cache import (
    CachedStore,
    ObjectCache,
)
from cronloop.controllers.clock import (
    Clock,
    LoopClock,
    SystemClock,
)
from cronloop.controllers.cronjob import (
    CANCEL_ANNOTATION,
    GUARANTEE_ANNOTATION,
    SKIPPED_HISTORY_LIMIT,
    CronJobController,
    RunStarter,
    job_phase,
)
from cronloop.controllers.fanout import (
    AttemptStart,
    FanOutPlan,
    FanOutTemplate,
    StepPlan,
    attempt_id,
    attempt_start,
    new_session,
    parse_attempt_id,
    plan_fan_out,
    step_settings,
)
from cronloop.controllers.heap import (
    GC_THRESHOLDS,
    settle_heap,
)
from cronloop.controllers.job import (
    LOST_RETRY_LIMIT,
    JobController,
)
from cronloop.controllers.logsweep import (
    LOG_SETTLE_SECONDS,
    SWEEP_LIMIT,
    LogSweeper,
    LogSweeperStatistics,
)
from cronloop.controllers.longrunning import (
    DurationHistory,
    LongRunningDetector,
    LongRunningStatistics,
    LongRunningWarning,
    Threshold,
)
from cronloop.controllers.manager import (
    FEED_BACKOFF_MAX,
    FEED_BACKOFF_MIN,
    REPORT_LINGER,
    Manager,
    ManagerStatistics,
)
from cronloop.controllers.objects import (
    CRONJOB_LABEL,
    JOB_LABEL,
    ResourceT,
    dump_model,
    from_stored,
    json_time,
    replacing,
    run_unique_key,
    to_stored,
    typed,
)
from cronloop.controllers.runstatus import (
    AttemptRecord,
    CronJobStatusRecord,
    JobStatusRecord,
    SubJobStatusRecord,
    counts_record,
    parse_time,
    phase_of,
    step_of,
    with_fields,
)

__all__ = [
    "AT_LEAST_ONCE",
    "AT_MOST_ONCE",
    "CANCEL_ANNOTATION",
    "CRONJOB_LABEL",
    "FEED_BACKOFF_MAX",
    "FEED_BACKOFF_MIN",
    "GC_THRESHOLDS",
    "GUARANTEE_ANNOTATION",
    "HOST_OVERLOADED",
    "JOB_LABEL",
    "LOG_SETTLE_SECONDS",
    "LOST_RETRY_LIMIT",
    "REPORT_LINGER",
    "SKIPPED_HISTORY_LIMIT",
    "SWEEP_LIMIT",
    "Admission",
    "AdmissionController",
    "AdmissionLimit",
    "AdmissionLimits",
    "AdmissionStatistics",
    "Admit",
    "AttemptRecord",
    "AttemptStart",
    "CachedStore",
    "Clock",
    "CronJobController",
    "CronJobStatusRecord",
    "Delay",
    "DurationHistory",
    "FanOutPlan",
    "FanOutTemplate",
    "HostLoad",
    "HostSampler",
    "JobController",
    "JobStatusRecord",
    "LogSweeper",
    "LogSweeperStatistics",
    "LongRunningDetector",
    "LongRunningStatistics",
    "LongRunningWarning",
    "LoopClock",
    "Manager",
    "ManagerStatistics",
    "ObjectCache",
    "PsutilSampler",
    "ResourceT",
    "RunStarter",
    "Skip",
    "StepPlan",
    "SubJobStatusRecord",
    "SystemClock",
    "Threshold",
    "attempt_id",
    "attempt_start",
    "counts_record",
    "dump_model",
    "from_stored",
    "job_phase",
    "json_time",
    "new_session",
    "parse_attempt_id",
    "parse_time",
    "phase_of",
    "plan_fan_out",
    "replacing",
    "run_unique_key",
    "settle_heap",
    "step_of",
    "step_settings",
    "to_stored",
    "typed",
    "with_fields",
]

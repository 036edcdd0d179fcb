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
    FanOutPlan,
    RunStarter,
    job_phase,
)
from cronloop.controllers.job import (
    LOST_RETRY_LIMIT,
    JobController,
    attempt_id,
    parse_attempt_id,
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
    Manager,
    ManagerStatistics,
)
from cronloop.controllers.objects import (
    CRONJOB_LABEL,
    JOB_LABEL,
    ResourceT,
    dump_status,
    from_stored,
    replacing,
    run_unique_key,
    to_stored,
    typed,
)

__all__ = [
    "AT_LEAST_ONCE",
    "AT_MOST_ONCE",
    "CANCEL_ANNOTATION",
    "CRONJOB_LABEL",
    "FEED_BACKOFF_MAX",
    "FEED_BACKOFF_MIN",
    "GUARANTEE_ANNOTATION",
    "HOST_OVERLOADED",
    "JOB_LABEL",
    "LOST_RETRY_LIMIT",
    "SKIPPED_HISTORY_LIMIT",
    "Admission",
    "AdmissionController",
    "AdmissionLimit",
    "AdmissionLimits",
    "AdmissionStatistics",
    "Admit",
    "CachedStore",
    "Clock",
    "CronJobController",
    "Delay",
    "DurationHistory",
    "FanOutPlan",
    "HostLoad",
    "HostSampler",
    "JobController",
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
    "SystemClock",
    "Threshold",
    "attempt_id",
    "dump_status",
    "from_stored",
    "job_phase",
    "parse_attempt_id",
    "replacing",
    "run_unique_key",
    "to_stored",
    "typed",
]

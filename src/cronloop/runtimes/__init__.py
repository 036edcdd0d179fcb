"""Where attempts run: the runtime contract and the built-in inline and process runtimes.

A controller hands an :class:`AttemptSpec` to a :class:`Runtime` and receives the attempt's
:class:`AttemptReport` s through one callback, in order; see :mod:`cronloop.runtimes.base` for
the guarantees and docs/runtimes.md for each runtime's behaviour.
"""

from __future__ import annotations

from cronloop.runtimes.base import (
    AttemptExistsError,
    ReportCallback,
    Runtime,
    RuntimeClosedError,
    UnknownAttemptError,
)
from cronloop.runtimes.inline import (
    AttemptCancelledError,
    AttemptContext,
    InlineRuntime,
)
from cronloop.runtimes.logfile import (
    LOG_NOTE_PREFIX,
    AttemptLog,
    append_note,
    truncation_marker,
)
from cronloop.runtimes.process import (
    BASE_ENV_NAMES,
    ProcessRuntime,
    default_base_env,
)
from cronloop.runtimes.proctree import (
    ATTEMPT_ID_ENV,
    START_TIME_TOLERANCE,
    boot_ticks,
    find_attempt_processes,
    is_gone,
    process_start_time,
    same_start_time,
    signal_group,
    spawned_start_time,
    stop_processes,
    watch_exit,
)
from cronloop.runtimes.report import (
    REPORTABLE_PHASES,
    AttemptHandle,
    AttemptReport,
    Reason,
    signal_name,
)
from cronloop.runtimes.spec import (
    DEFAULT_KILL_GRACE,
    DEFAULT_LOG_LIMIT,
    RESERVED_ENV_PREFIX,
    AttemptSpec,
    InlineSettings,
    ProcessSettings,
    RecoveryRecord,
    StepSettings,
)

__all__ = [
    "ATTEMPT_ID_ENV",
    "BASE_ENV_NAMES",
    "DEFAULT_KILL_GRACE",
    "DEFAULT_LOG_LIMIT",
    "LOG_NOTE_PREFIX",
    "REPORTABLE_PHASES",
    "RESERVED_ENV_PREFIX",
    "START_TIME_TOLERANCE",
    "AttemptCancelledError",
    "AttemptContext",
    "AttemptExistsError",
    "AttemptHandle",
    "AttemptLog",
    "AttemptReport",
    "AttemptSpec",
    "InlineRuntime",
    "InlineSettings",
    "ProcessRuntime",
    "ProcessSettings",
    "Reason",
    "RecoveryRecord",
    "ReportCallback",
    "Runtime",
    "RuntimeClosedError",
    "StepSettings",
    "UnknownAttemptError",
    "append_note",
    "boot_ticks",
    "default_base_env",
    "find_attempt_processes",
    "is_gone",
    "process_start_time",
    "same_start_time",
    "signal_group",
    "signal_name",
    "spawned_start_time",
    "stop_processes",
    "truncation_marker",
    "watch_exit",
]

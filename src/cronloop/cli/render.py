"""How the CLI shows resources: table rows for ``get``, sections for ``describe``.

Row builders return plain strings so that ``get`` can print them as a Rich table and ``get -w``
as one line per change. Times are shown relative to ``now`` (``5m ago``, ``in 2h``), durations
compactly (``1h2m``), like ``kubectl``.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import datetime

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from cronloop.api import (
    Attempt,
    CronJob,
    InlineStep,
    Job,
    Phase,
    ProcessStep,
    Resource,
    ScheduleError,
    Step,
    SubJob,
)
from cronloop.controllers.objects import CRONJOB_LABEL

__all__ = [
    "Rows",
    "columns_for",
    "describe_cronjob",
    "describe_job",
    "format_age",
    "format_duration",
    "next_run",
    "row_for",
    "table",
]

Rows = list[list[str]]

_NONE = "<none>"

_COLUMNS: dict[str, list[str]] = {
    "CronJob": ["NAME", "SCHEDULE", "TZ", "SUSPEND", "ACTIVE", "LAST-SCHEDULE", "NEXT", "AGE"],
    "Job": [
        "NAME",
        "PHASE",
        "TARGETS",
        "CRONJOB",
        "SCHEDULED",
        "STARTED",
        "DURATION",
        "AGE",
    ],
    "SubJob": ["NAME", "JOB", "TARGET", "PHASE", "ATTEMPTS", "EXIT", "AGE"],
}
_WIDE: dict[str, list[str]] = {
    "CronJob": ["GUARANTEE", "CATCH-UP", "CONCURRENCY", "LAST-SUCCESS", "STARTED/SKIPPED/MISSED"],
    "Job": ["REASON", "MESSAGE"],
    "SubJob": ["REASON", "MESSAGE"],
}


def format_duration(seconds: float) -> str:
    """``45s``, ``5m3s``, ``2h3m``, ``3d4h``: the two largest units."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def format_age(when: datetime | None, now: datetime) -> str:
    """``5m ago`` / ``in 2h`` for ``when`` relative to ``now``; ``<none>`` when unset."""
    if when is None:
        return _NONE
    delta = (now - when).total_seconds()
    if delta >= 0:
        return f"{format_duration(delta)} ago"
    return f"in {format_duration(-delta)}"


def _age(when: datetime | None, now: datetime) -> str:
    return format_duration((now - when).total_seconds()) if when is not None else _NONE


def next_run(cronjob: CronJob, now: datetime) -> datetime | None:
    """When ``cronjob`` next fires after ``now`` (``None`` when suspended)."""
    if cronjob.spec.suspend:
        return None
    created = cronjob.metadata.creation_timestamp
    try:
        schedule = (
            cronjob.spec.parsed_schedule(anchor=created)
            if created
            else cronjob.spec.parsed_schedule()
        )
        return schedule.next_after(now)
    except ScheduleError:
        return None


def _duration(start: datetime | None, end: datetime | None, now: datetime) -> str:
    if start is None:
        return _NONE
    return format_duration(((end or now) - start).total_seconds())


def columns_for(kind: str, *, wide: bool = False) -> list[str]:
    """The column headings of ``get`` for ``kind``."""
    return _COLUMNS[kind] + (_WIDE[kind] if wide else [])


def _cronjob_row(cronjob: CronJob, now: datetime, wide: bool) -> list[str]:
    spec, status = cronjob.spec, cronjob.status
    row = [
        cronjob.metadata.name,
        spec.schedule,
        spec.time_zone,
        "True" if spec.suspend else "False",
        str(len(status.active)),
        format_age(status.last_schedule_time, now),
        format_age(next_run(cronjob, now), now),
        _age(cronjob.metadata.creation_timestamp, now),
    ]
    if wide:
        row += [
            spec.guarantee.value,
            spec.catch_up.value,
            spec.concurrency_policy.value,
            format_age(status.last_successful_time, now),
            f"{status.started_runs}/{status.skipped_runs}/{status.missed_runs}",
        ]
    return row


def _targets(job: Job) -> str:
    counts = job.status.counts
    total = counts.total or job.spec.targets.count
    return f"{counts.succeeded}/{total if total is not None else '?'}"


def _job_row(job: Job, now: datetime, wide: bool) -> list[str]:
    status = job.status
    cron = status.cron_job.name if status.cron_job else job.metadata.labels.get(CRONJOB_LABEL)
    row = [
        job.metadata.name,
        status.phase.value,
        _targets(job),
        cron or _NONE,
        format_age(status.scheduled_time, now),
        format_age(status.start_time, now),
        _duration(status.start_time, status.completion_time, now),
        _age(job.metadata.creation_timestamp, now),
    ]
    if wide:
        row += [status.reason or "", status.message or ""]
    return row


def _subjob_row(sub: SubJob, now: datetime, wide: bool) -> list[str]:
    status = sub.status
    last = status.attempts[-1] if status.attempts else None
    exit_code = _NONE if last is None or last.exit_code is None else str(last.exit_code)
    row = [
        sub.metadata.name,
        sub.spec.job.name,
        sub.spec.target,
        status.phase.value,
        str(len(status.attempts)),
        exit_code,
        _age(sub.metadata.creation_timestamp, now),
    ]
    if wide:
        row += [status.reason or "", status.message or ""]
    return row


def row_for(resource: Resource, now: datetime, *, wide: bool = False) -> list[str]:
    """The ``get`` row of ``resource``."""
    if isinstance(resource, CronJob):
        return _cronjob_row(resource, now, wide)
    if isinstance(resource, Job):
        return _job_row(resource, now, wide)
    return _subjob_row(resource, now, wide)


_PHASE_STYLE = {
    Phase.SUCCEEDED: "green",
    Phase.FAILED: "red",
    Phase.TIMED_OUT: "red",
    Phase.LOST: "red",
    Phase.CANCELLED: "yellow",
    Phase.SKIPPED: "dim",
    Phase.RUNNING: "cyan",
}


def table(columns: Sequence[str], rows: Rows) -> Table:
    """A borderless Rich table (``kubectl get`` style); phases are coloured."""
    out = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        out.add_column(column, no_wrap=True)
    phase_col = columns.index("PHASE") if "PHASE" in columns else None
    for row in rows:
        cells: list[RenderableType] = list(row)
        if phase_col is not None:
            try:
                style = _PHASE_STYLE.get(Phase(row[phase_col]), "")
            except ValueError:
                style = ""
            cells[phase_col] = Text(row[phase_col], style=style)
        out.add_row(*cells)
    return out


def _fields(pairs: Sequence[tuple[str, str]], indent: int = 0) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(" " * indent + key + ":", value)
    return grid


def _step(step: Step | None) -> str:
    if step is None:
        return _NONE
    if isinstance(step, InlineStep):
        text = f"inline {step.callable}"
        if step.kwargs:
            text += " " + ", ".join(f"{k}={v!r}" for k, v in step.kwargs.items())
    else:
        assert isinstance(step, ProcessStep)
        # Quoted as a shell would need it, so that the line can be pasted into a terminal.
        text = (
            f"process: {step.command}"
            if step.command
            else "process: " + shlex.join(step.argv or ())
        )
        if step.env:
            text += f" (env: {', '.join(step.env)})"
    if step.timeout_seconds:
        text += f", timeout {format_duration(step.timeout_seconds)}"
    return text


def _labels(resource: Resource) -> str:
    labels = resource.metadata.labels
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or _NONE


def describe_cronjob(cronjob: CronJob, runs: Sequence[Job], now: datetime) -> Group:
    """The ``describe cronjob`` sections: spec, status and recent runs."""
    spec, status = cronjob.spec, cronjob.status
    head = _fields(
        [
            ("Name", cronjob.metadata.name),
            ("Labels", _labels(cronjob)),
            ("Created", format_age(cronjob.metadata.creation_timestamp, now)),
            ("Schedule", f"{spec.schedule} ({spec.time_zone})"),
            ("Suspend", str(spec.suspend)),
            ("Next run", format_age(next_run(cronjob, now), now)),
            ("Concurrency", spec.concurrency_policy.value),
            ("Guarantee", spec.guarantee.value),
            ("Catch-up", f"{spec.catch_up.value} (at most {spec.max_catch_up_runs} runs)"),
            (
                "Starting deadline",
                format_duration(spec.starting_deadline_seconds)
                if spec.starting_deadline_seconds
                else _NONE,
            ),
            ("Targets", _target_summary(cronjob)),
            ("Prepare", _step(spec.job_template.prepare)),
            ("Main", _step(spec.job_template.main)),
            ("Retries", str(spec.job_template.retries.limit)),
        ]
    )
    state = _fields(
        [
            ("Last schedule", format_age(status.last_schedule_time, now)),
            ("Last success", format_age(status.last_successful_time, now)),
            ("Active", ", ".join(r.name for r in status.active) or _NONE),
            (
                "Runs",
                (
                    f"{status.started_runs} started, {status.skipped_runs} skipped, "
                    f"{status.missed_runs} missed"
                ),
            ),
        ],
        indent=2,
    )
    parts: list[RenderableType] = [head, Text("Status:", style="bold"), state]
    parts.append(Text("Runs:", style="bold"))
    if runs:
        rows = [row_for(run, now) for run in runs]
        parts.append(Padding(table(columns_for("Job"), rows), (0, 0, 0, 2)))
    else:
        parts.append(Text("  <none>"))
    return Group(*parts)


def _target_summary(resource: CronJob | Job) -> str:
    targets = (
        resource.spec.job_template.targets
        if isinstance(resource, CronJob)
        else resource.spec.targets
    )
    if targets.names is not None:
        return ", ".join(targets.names)
    if targets.shards is not None:
        return f"{targets.shards} shards"
    assert targets.selector is not None
    return "agents with " + ", ".join(f"{k}={v}" for k, v in targets.selector.match_labels.items())


def _attempt_rows(attempts: Sequence[Attempt], now: datetime) -> Rows:
    rows = []
    for a in attempts:
        exit_text = _NONE if a.exit_code is None else str(a.exit_code)
        if a.signal is not None:
            exit_text = f"signal {a.signal}"
        reason = a.reason or ""
        if a.message:
            reason = f"{reason}: {a.message}" if reason else a.message
        rows.append(
            [
                str(a.number),
                a.step.value,
                a.phase.value,
                exit_text,
                format_age(a.start_time, now),
                _duration(a.start_time, a.finish_time, now),
                reason,
            ]
        )
    return rows


def describe_job(job: Job, subjobs: Sequence[SubJob], now: datetime) -> Group:
    """The ``describe job`` sections: spec, status, and each sub-job with its attempts."""
    spec, status = job.spec, job.status
    policy = spec.success_policy
    head = _fields(
        [
            ("Name", job.metadata.name),
            ("Labels", _labels(job)),
            ("CronJob", status.cron_job.name if status.cron_job else _NONE),
            ("Created", format_age(job.metadata.creation_timestamp, now)),
            ("Targets", _target_summary(job)),
            ("Prepare", _step(spec.prepare)),
            ("Main", _step(spec.main)),
            (
                "Retries",
                (
                    f"{spec.retries.limit} (backoff {spec.retries.backoff_seconds:g}s, "
                    f"max {spec.retries.max_backoff_seconds:g}s)"
                ),
            ),
            ("Success policy", policy.mode.value + (f" {policy.n}" if policy.n else "")),
            (
                "Timeout",
                format_duration(spec.timeout_seconds) if spec.timeout_seconds else _NONE,
            ),
        ]
    )
    counts = status.counts
    count_text = ", ".join(f"{counts.get(p)} {p.value}" for p in Phase if counts.get(p)) or _NONE
    state = _fields(
        [
            ("Phase", status.phase.value),
            ("Reason", status.reason or _NONE),
            ("Message", status.message or _NONE),
            ("Scheduled", format_age(status.scheduled_time, now)),
            ("Started", format_age(status.start_time, now)),
            ("Finished", format_age(status.completion_time, now)),
            ("Duration", _duration(status.start_time, status.completion_time, now)),
            ("Sub-jobs", count_text),
        ],
        indent=2,
    )
    parts: list[RenderableType] = [head, Text("Status:", style="bold"), state]
    parts.append(Text("Sub-jobs:", style="bold"))
    if not subjobs:
        parts.append(Text("  <none yet>"))
    for sub in subjobs:
        line = f"  {sub.spec.target}: {sub.status.phase.value}"
        if sub.status.reason:
            line += f" ({sub.status.reason}"
            line += f": {sub.status.message})" if sub.status.message else ")"
        parts.append(Text(line))
        if sub.status.attempts:
            attempts = table(
                ["#", "STEP", "PHASE", "EXIT", "STARTED", "DURATION", "REASON"],
                _attempt_rows(sub.status.attempts, now),
            )
            parts.append(Padding(attempts, (0, 0, 0, 4)))
    return Group(*parts)

"""The pure formatting helpers behind ``get`` and ``describe``."""

from __future__ import annotations

import io
import shlex
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from cronloop.api import CronJob, Job, Phase, PhaseCounts, load_resources
from cronloop.cli.render import (
    columns_for,
    describe_job,
    format_age,
    format_duration,
    next_run,
    row_for,
)
from tests.cli.files import CRONJOB_YAML, JOB_YAML

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m"),
        (61, "1m1s"),
        (3600, "1h"),
        (3720, "1h2m"),
        (86_400, "1d"),
        (90_000, "1d1h"),
        (-5, "0s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**9))
def test_format_duration_uses_at_most_two_units(seconds: int) -> None:
    text = format_duration(seconds)
    units = [c for c in text if c.isalpha()]
    assert 1 <= len(units) <= 2
    assert units == sorted(units, key="dhms".index)


def test_format_age_past_future_and_unset() -> None:
    assert format_age(NOW - timedelta(minutes=5), NOW) == "5m ago"
    assert format_age(NOW + timedelta(hours=2), NOW) == "in 2h"
    assert format_age(None, NOW) == "<none>"


def test_next_run_respects_zone_and_suspend() -> None:
    (cronjob,) = load_resources(CRONJOB_YAML)
    assert isinstance(cronjob, CronJob)
    # 03:00 in Paris is 02:00 UTC in winter; the next one after noon is tomorrow's.
    assert next_run(cronjob, NOW) == datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    suspended = cronjob.model_copy(
        update={"spec": cronjob.spec.model_copy(update={"suspend": True})}
    )
    assert next_run(suspended, NOW) is None


def test_job_row_counts_targets_and_duration() -> None:
    (job,) = load_resources(JOB_YAML)
    assert isinstance(job, Job)
    status = job.status.model_copy(
        update={
            "phase": Phase.SUCCEEDED,
            "counts": PhaseCounts(succeeded=2),
            "start_time": NOW - timedelta(minutes=3),
            "completion_time": NOW - timedelta(minutes=1),
            "reason": "Completed",
        }
    )
    row = row_for(job.model_copy(update={"status": status}), NOW, wide=True)
    assert len(row) == len(columns_for("Job", wide=True))
    assert row[:3] == ["adhoc", "Succeeded", "2/2"]
    assert row[5:7] == ["3m ago", "2m"]
    assert row[-2] == "Completed"
    pending = row_for(job, NOW)
    assert pending[2] == "0/2"  # before fan-out the total comes from the spec


def test_describe_quotes_argv_so_it_can_be_pasted_into_a_shell() -> None:
    argv = ["python3", "-c", "import sys; print('it''s', sys.argv[1:])", "a b", "$HOME"]
    text = JOB_YAML.replace("argv: [echo, hi]", f"argv: {argv!r}")
    (job,) = load_resources(text)
    assert isinstance(job, Job)
    out = io.StringIO()
    Console(file=out, width=500).print(describe_job(job, [], NOW))
    [main] = [line for line in out.getvalue().splitlines() if line.startswith("Main:")]
    command = main.removeprefix("Main:").strip().removeprefix("process: ")
    assert command == shlex.join(argv)
    assert shlex.split(command) == argv

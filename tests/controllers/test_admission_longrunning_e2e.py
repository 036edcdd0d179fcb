"""Admission and long-running detection, wired into the running controllers (fake clock)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from cronloop.api import Phase
from cronloop.controllers import AdmissionController, AdmissionLimits, HostLoad

from .harness import START, running_stack

SLOW = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: slow}
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  expectedDurationSeconds: 30
  jobTemplate:
    main: {runtime: inline, callable: "cronloop.demos.jobs:slow", kwargs: {seconds: 90}}
"""

MINUTELY = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {{name: busy}}
spec:
  schedule: "* * * * *"
  guarantee: {guarantee}
  jobTemplate:
    main: {{runtime: inline, callable: "cronloop.demos.jobs:heartbeat"}}
"""


@pytest.mark.looptime(start=0)
async def test_a_long_run_is_warned_about_once_and_keeps_running(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        await stack.apply(SLOW)
        await asyncio.sleep(60 + 45)  # 12:01:45: the 12:01 run is 45 s in, expected 30 s
        (running,) = [j for j in await stack.jobs("slow") if not j.status.phase.terminal]
        assert running.status.phase is Phase.RUNNING
        assert len(running.status.warnings) == 1
        assert "expected at most 30s" in running.status.warnings[0]
        finished = await stack.wait_job(running.metadata.name)
        assert stack.manager.statistics().long_running_warnings >= 1
    assert finished.status.phase is Phase.SUCCEEDED
    assert len(finished.status.warnings) == 1


class Switch:
    """A host sampler the test turns from overloaded to idle."""

    def __init__(self) -> None:
        self.cpu = 99.0

    def sample(self) -> HostLoad:
        return HostLoad(cpu_percent=self.cpu, memory_percent=10.0, load1_per_core=0.1, at=0.0)


@pytest.mark.parametrize("guarantee", ["AtLeastOnce", "AtMostOnce"])
@pytest.mark.looptime(start=0)
async def test_an_overloaded_host_delays_or_skips_due_runs(tmp_path: Path, guarantee: str) -> None:
    switch = Switch()
    admission = AdmissionController(
        AdmissionLimits(max_cpu_percent=90), switch, sample_ttl=0, max_delay=5
    )
    async with running_stack(tmp_path, admission=admission) as stack:
        await stack.apply(MINUTELY.format(guarantee=guarantee))
        await asyncio.sleep(60 + 20)  # 12:01 is due while the host is overloaded
        during = await stack.jobs("busy")
        switch.cpu = 20.0
        await asyncio.sleep(20)  # 12:01:40, the host has recovered
        after = await stack.jobs("busy")
        stats = admission.statistics()

    first = START + timedelta(minutes=1)
    if guarantee == "AtLeastOnce":
        assert during == []  # delayed, not started and not skipped
        (run,) = after
        assert run.status.scheduled_time == first
        assert run.status.phase is Phase.SUCCEEDED
        assert stats.delayed >= 1
        assert run.status.start_time is not None
        assert run.status.start_time - first >= timedelta(seconds=20)
    else:
        (skip,) = during
        assert skip.status.phase is Phase.SKIPPED
        assert skip.status.reason == "HostOverloaded"
        assert skip.status.message is not None
        assert "cpu" in skip.status.message
        assert stats.skipped == 1
        assert after == during

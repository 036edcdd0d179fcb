"""Deleting a Job, its CronJob or one of its sub-jobs stops what still runs of it.

The audit of ``cronloop up`` found ``sleep`` trees of a deleted Job running on until the server
stopped: the Job's pass found nothing stored and dropped its reports, but nobody told the
runtime. The scripted runtime shows which attempts the controller asks to stop, and why; the
last test runs real processes through the process runtime.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from cronloop.api import Phase, SubJob
from cronloop.runtimes import ProcessRuntime, Reason
from cronloop.store import NotFound
from tests.runtimes.helpers import await_gone

from .harness import Stack, running_stack
from .scripted import ScriptedRuntime

TWO_TARGETS = """
apiVersion: cronloop.dev/v1
kind: Job
metadata: {name: delrun}
spec:
  targets: [eu, us]
  main: {runtime: inline, callable: "cronloop.demos.jobs:report"}
"""

CRONJOB = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: minutely}
spec:
  schedule: "* * * * *"
  jobTemplate:
    targets: [eu, us]
    main: {runtime: inline, callable: "cronloop.demos.jobs:report"}
"""

PRUNED = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: pruned}
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 0
  jobTemplate:
    targets: {shards: 2}
    main: {runtime: inline, callable: "cronloop.demos.jobs:report"}
    successPolicy: {mode: AtLeast, n: 1}
"""


class StoppableRuntime(ScriptedRuntime):
    """The scripted runtime, noting every stop it is asked for (with its reason)."""

    def __init__(self) -> None:
        super().__init__()
        self.stops: list[tuple[str, str]] = []

    async def cancel(
        self, attempt_id: str, *, grace: float, reason: str = Reason.CANCELLED_BY_USER
    ) -> None:
        await super().cancel(attempt_id, grace=grace, reason=reason)
        self.stops.append((attempt_id, reason))
        self.changed.set()


async def _until(runtime: ScriptedRuntime, done: Callable[[], bool]) -> None:
    """Wait until ``done()`` holds, re-checked whenever the runtime starts or stops something."""
    async with asyncio.timeout(120):
        while not done():
            runtime.changed.clear()
            await runtime.changed.wait()


async def _settled(stack: Stack) -> None:
    """Let the reports just given be taken by their jobs' passes."""
    # Fake time, past the reports' linger; looptime keeps the clock still while a pass's
    # store read or write is in flight, so the passes have run when this returns.
    await asyncio.sleep(1)
    assert stack.manager.jobs.waiting_reports() == []


def _no_errors(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage() for r in loud]


async def _gone(stack: Stack, kind: str, name: str) -> bool:
    try:
        await stack.store.get(kind, name)
    except NotFound:
        return True
    return False


@pytest.mark.looptime(start=0)
@pytest.mark.parametrize(
    ("spec", "kind", "name"),
    [(TWO_TARGETS, "Job", "delrun"), (CRONJOB, "CronJob", "minutely")],
    ids=["the job", "its cronjob"],
)
async def test_deleting_a_running_job_or_its_cronjob_stops_its_attempts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spec: str, kind: str, name: str
) -> None:
    runtime = StoppableRuntime()
    async with running_stack(tmp_path, runtimes={"inline": runtime}) as stack:
        await stack.apply(spec)
        await _until(runtime, lambda: len(runtime.started) == 2)
        attempts = sorted(runtime.started)
        for attempt in attempts:
            runtime.report(attempt, 1, Phase.RUNNING)
        await _settled(stack)
        caplog.set_level(logging.WARNING, logger="cronloop")

        await stack.store.delete(kind, name)
        await _until(runtime, lambda: len(runtime.stops) == 2)
        assert sorted(runtime.stops) == [(a, "JobDeleted") for a in attempts]

        # The stopped attempts' last reports come after the Job is gone: they change nothing
        # and bring nothing back.
        for attempt in attempts:
            runtime.report(attempt, 2, Phase.CANCELLED)
        await _settled(stack)
        assert (await stack.store.list("Job")).items == []
        assert (await stack.store.list("SubJob")).items == []
        _no_errors(caplog)
    assert len(runtime.stops) == 2


@pytest.mark.looptime(start=0)
async def test_a_pruned_run_stops_what_still_runs_of_it(tmp_path: Path) -> None:
    runtime = StoppableRuntime()
    async with running_stack(tmp_path, runtimes={"inline": runtime}) as stack:
        await stack.apply(PRUNED)
        await _until(runtime, lambda: len(runtime.started) == 2)
        done, slow = sorted(runtime.started)
        for attempt in (done, slow):
            runtime.report(attempt, 1, Phase.RUNNING)
        # One shard is enough: the run succeeds, its other shard is asked to stop, and the
        # history limit of 0 deletes the run while that shard has not ended yet.
        runtime.report(done, 2, Phase.SUCCEEDED)
        await _until(runtime, lambda: (slow, "JobDeleted") in runtime.stops)
        assert runtime.stops == [(slow, "RunFinished"), (slow, "JobDeleted")]
        assert (await stack.store.list("Job")).items == []


@pytest.mark.looptime(start=0)
async def test_deleting_a_subjob_stops_only_its_attempt(tmp_path: Path) -> None:
    runtime = StoppableRuntime()
    async with running_stack(tmp_path, runtimes={"inline": runtime}) as stack:
        await stack.apply(TWO_TARGETS)
        await _until(runtime, lambda: len(runtime.started) == 2)
        for attempt in runtime.started:
            runtime.report(attempt, 1, Phase.RUNNING)
        await _settled(stack)
        subs = {s.spec.target: s for s in await stack.subjobs("delrun")}
        eu = str(subs["eu"].status.attempts[-1].runtime["attemptId"])

        await stack.store.delete("SubJob", subs["eu"].metadata.name)
        await _until(runtime, lambda: bool(runtime.stops))
        assert runtime.stops == [(eu, "SubJobDeleted")]
        runtime.report(eu, 2, Phase.CANCELLED)
        await _settled(stack)
        assert [s.spec.target for s in await stack.subjobs("delrun")] == ["us"]
        assert runtime.stops == [(eu, "SubJobDeleted")]


SLEEPERS = """
apiVersion: cronloop.dev/v1
kind: Job
metadata: {name: delrun}
spec:
  targets: [one, two]
  main: {runtime: process, argv: [sleep, "306"]}
"""


async def test_deleting_a_job_kills_its_processes(tmp_path: Path) -> None:
    """Real processes, real time: nothing here waits for time to pass, only for events."""
    process = ProcessRuntime(shutdown_grace=1.0, drain_timeout=1.0)
    async with running_stack(tmp_path, runtimes={"process": process}) as stack:
        await stack.apply(SLEEPERS)

        async def both_running() -> bool:
            subs = await stack.subjobs("delrun")
            return len(subs) == 2 and all(
                s.status.attempts and s.status.attempts[-1].runtime.get("pid") for s in subs
            )

        await stack.wait_for(both_running, within=30)
        subs: list[SubJob] = await stack.subjobs("delrun")
        attempts = [str(s.status.attempts[-1].runtime["attemptId"]) for s in subs]
        pids = [int(str(s.status.attempts[-1].runtime["pid"])) for s in subs]

        await stack.store.delete("Job", "delrun")
        async with asyncio.timeout(30):
            finals = await asyncio.gather(*(process.wait(a) for a in attempts))
        assert [(f.phase, f.reason) for f in finals] == [(Phase.CANCELLED, "JobDeleted")] * 2
        assert await await_gone(pids) == []
        assert await _gone(stack, "Job", "delrun")

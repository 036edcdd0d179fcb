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
from cronloop.controllers import typed
from cronloop.runtimes import ProcessRuntime, Reason
from cronloop.store import NotFound
from tests.runtimes.helpers import await_gone

from .harness import Stack, running_stack
from .scripted import ScriptedRuntime
from .support import assert_quiet, start_running, wait_until

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


async def _wait_stops(runtime: StoppableRuntime, done: Callable[[], bool]) -> None:
    """Wait until ``done()`` holds, re-checked whenever the runtime is asked to stop something."""
    await wait_until(runtime.changed, done, within=120)


async def _wait_running_recorded(stack: Stack, attempts: list[str]) -> None:
    """Wait until the stored sub-jobs show each of ``attempts`` Running: their reports were
    applied."""

    async def recorded() -> bool:
        subs = [typed(o, SubJob) for o in (await stack.store.list("SubJob")).items]
        running = {
            str(a.runtime.get("attemptId"))
            for s in subs
            for a in s.status.attempts
            if a.phase is Phase.RUNNING
        }
        return running >= set(attempts)

    await stack.wait_for(recorded, within=60)
    assert stack.manager.jobs.waiting_reports() == []


async def _settle_reports(stack: Stack) -> None:
    """Let the reports just given, about a Job or sub-job already gone, be taken by their
    jobs' passes.

    Such reports change nothing stored, so there is no change to wait for: this advances fake
    time past the reports' linger. looptime keeps the clock still while a pass's store read or
    write is in flight, so the passes have run when this returns.
    """
    await asyncio.sleep(1)  # fake time
    assert stack.manager.jobs.waiting_reports() == []


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
        attempts = await start_running(runtime, 2)
        await _wait_running_recorded(stack, attempts)
        caplog.set_level(logging.WARNING, logger="cronloop")

        await stack.store.delete(kind, name)
        await _wait_stops(runtime, lambda: len(runtime.stops) == 2)
        assert sorted(runtime.stops) == [(a, "JobDeleted") for a in attempts]

        # The stopped attempts' last reports come after the Job is gone: they change nothing
        # and bring nothing back.
        for attempt in attempts:
            runtime.report(attempt, 2, Phase.CANCELLED)
        await _settle_reports(stack)
        assert (await stack.store.list("Job")).items == []
        assert (await stack.store.list("SubJob")).items == []
        assert_quiet(caplog)
    assert len(runtime.stops) == 2


@pytest.mark.looptime(start=0)
async def test_a_pruned_run_stops_what_still_runs_of_it(tmp_path: Path) -> None:
    runtime = StoppableRuntime()
    async with running_stack(tmp_path, runtimes={"inline": runtime}) as stack:
        await stack.apply(PRUNED)
        done, slow = await start_running(runtime, 2)
        # One shard is enough: the run succeeds, its other shard is asked to stop, and the
        # history limit of 0 deletes the run while that shard has not ended yet.
        runtime.report(done, 2, Phase.SUCCEEDED)
        await _wait_stops(runtime, lambda: (slow, "JobDeleted") in runtime.stops)
        assert runtime.stops == [(slow, "RunFinished"), (slow, "JobDeleted")]
        assert (await stack.store.list("Job")).items == []


@pytest.mark.looptime(start=0)
async def test_deleting_a_subjob_stops_only_its_attempt(tmp_path: Path) -> None:
    runtime = StoppableRuntime()
    async with running_stack(tmp_path, runtimes={"inline": runtime}) as stack:
        await stack.apply(TWO_TARGETS)
        await _wait_running_recorded(stack, await start_running(runtime, 2))
        subs = {s.spec.target: s for s in await stack.subjobs("delrun")}
        eu = str(subs["eu"].status.attempts[-1].runtime["attemptId"])

        await stack.store.delete("SubJob", subs["eu"].metadata.name)
        await _wait_stops(runtime, lambda: bool(runtime.stops))
        assert runtime.stops == [(eu, "SubJobDeleted")]
        runtime.report(eu, 2, Phase.CANCELLED)
        await _settle_reports(stack)
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


@pytest.mark.slow
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
        with pytest.raises(NotFound):
            await stack.store.get("Job", "delrun")

"""A finished Job's counts follow its sub-jobs as they settle; its phase stays where it ended.

A Job can end while some of its sub-jobs still run: AtLeast N has its N successes, or the
Job's own deadline passed. Those sub-jobs are then settled (Cancelled with ``RunFinished``, or
TimedOut) in the very pass that ends the Job, and their attempts stop after it. The audit of
``cronloop up`` found such Jobs stored with ``counts`` from before the settling (``1 Running,
3 Succeeded`` next to a Cancelled shard). The runtime here is scripted, so each case is exact.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cronloop.api import Job, Phase, PhaseCounts
from cronloop.controllers import CANCEL_ANNOTATION, to_stored, typed

from .harness import Stack, running_stack
from .scripted import ScriptedRuntime
from .support import start_running

SHARDED = """
apiVersion: cronloop.dev/v1
kind: Job
metadata: {name: sharded}
spec:
  targets: {shards: 4}
  main: {runtime: inline, callable: "cronloop.demos.jobs:report"}
  successPolicy: {mode: AtLeast, n: 3}
"""

DEADLINE = """
apiVersion: cronloop.dev/v1
kind: Job
metadata: {name: deadline}
spec:
  targets: [eu, us]
  main: {runtime: inline, callable: "cronloop.demos.jobs:report"}
  timeoutSeconds: 30
"""


async def _counts_and_subjobs(stack: Stack, name: str) -> tuple[Job, PhaseCounts, list[Phase]]:
    job = typed(await stack.store.get("Job", name), Job)
    phases = [sub.status.phase for sub in await stack.subjobs(name)]
    return job, job.status.counts, phases


@pytest.mark.looptime(start=0)
async def test_at_least_n_counts_the_cancelled_shard(tmp_path: Path) -> None:
    runtime = ScriptedRuntime()
    async with running_stack(tmp_path, runtimes={"inline": runtime}) as stack:
        await stack.apply(SHARDED)
        attempts = await start_running(runtime, 4)
        slow = next(a for a in attempts if "shard-2" in a)
        for attempt in attempts:
            if attempt != slow:
                runtime.report(attempt, 2, Phase.SUCCEEDED)
        job = await stack.wait_job("sharded", within=60)
        assert job.status.phase is Phase.SUCCEEDED
        assert runtime.cancelled == [slow]
        job, counts, phases = await _counts_and_subjobs(stack, "sharded")
        assert sorted(phases) == sorted([Phase.SUCCEEDED] * 3 + [Phase.CANCELLED])
        assert counts == PhaseCounts.of(phases)
        assert (counts.succeeded, counts.cancelled, counts.running) == (3, 1, 0)

        # The stopped attempt's own end arrives later: recorded, and nothing moves back.
        runtime.report(slow, 2, Phase.CANCELLED)

        async def slow_attempt_recorded() -> bool:
            subs = await stack.subjobs("sharded")
            return any(
                s.status.attempts and s.status.attempts[-1].phase is Phase.CANCELLED for s in subs
            )

        await stack.wait_for(slow_attempt_recorded, within=60)
        job, counts, phases = await _counts_and_subjobs(stack, "sharded")
        assert job.status.phase is Phase.SUCCEEDED
        assert counts == PhaseCounts.of(phases)
        assert (counts.succeeded, counts.cancelled) == (3, 1)


@pytest.mark.looptime(start=0)
async def test_job_deadline_counts_the_timed_out_targets(tmp_path: Path) -> None:
    runtime = ScriptedRuntime()
    async with running_stack(tmp_path, runtimes={"inline": runtime}) as stack:
        await stack.apply(DEADLINE)
        attempts = await start_running(runtime, 2)
        # One target is done before the deadline; the other is still running when it passes.
        runtime.report(attempts[0], 2, Phase.SUCCEEDED)
        job = await stack.wait_job("deadline", within=120)
        assert job.status.phase is Phase.TIMED_OUT
        assert runtime.cancelled == [attempts[1]]
        job, counts, phases = await _counts_and_subjobs(stack, "deadline")
        assert sorted(phases) == sorted([Phase.SUCCEEDED, Phase.TIMED_OUT])
        assert counts == PhaseCounts.of(phases)
        assert (counts.succeeded, counts.timed_out, counts.running) == (1, 1, 0)


@pytest.mark.looptime(start=0)
async def test_cancelled_job_counts_its_cancelled_targets(tmp_path: Path) -> None:
    runtime = ScriptedRuntime()
    async with running_stack(tmp_path, runtimes={"inline": runtime}) as stack:
        await stack.apply(DEADLINE.replace("timeoutSeconds: 30", "timeoutSeconds: 3000"))
        await start_running(runtime, 2)
        obj = await stack.store.get("Job", "deadline")
        job = typed(obj, Job)
        # What `cronloop cancel` writes.
        annotations = {**job.metadata.annotations, CANCEL_ANNOTATION: "CancelledByUser"}
        meta = job.metadata.model_copy(update={"annotations": annotations})
        await stack.store.update(to_stored(job.model_copy(update={"metadata": meta})))
        job = await stack.wait_job("deadline", within=60)
        assert job.status.phase is Phase.CANCELLED
        job, counts, phases = await _counts_and_subjobs(stack, "deadline")
        assert phases == [Phase.CANCELLED, Phase.CANCELLED]
        assert counts == PhaseCounts.of(phases)


@pytest.mark.looptime(start=0)
async def test_stale_counts_of_a_finished_job_are_repaired(tmp_path: Path) -> None:
    runtime = ScriptedRuntime()
    async with running_stack(tmp_path, runtimes={"inline": runtime}) as stack:
        await stack.apply(DEADLINE)
        for attempt in await start_running(runtime, 2):
            runtime.report(attempt, 2, Phase.SUCCEEDED)
        job = await stack.wait_job("deadline", within=60)
        assert job.status.phase is Phase.SUCCEEDED
        # What an older controller stored for a finished Job: counts from before it ended.
        obj = await stack.store.get("Job", "deadline")
        stale = {**obj.status, "counts": {"running": 1, "succeeded": 1}}
        await stack.store.update_status(obj.with_status(stale))

        async def repaired() -> bool:
            job = typed(await stack.store.get("Job", "deadline"), Job)
            return job.status.counts.succeeded == 2

        await stack.wait_for(repaired, within=60)
        job, counts, phases = await _counts_and_subjobs(stack, "deadline")
        assert job.status.phase is Phase.SUCCEEDED
        assert counts == PhaseCounts.of(phases)

"""An attempt recorded but never handed to its runtime does not stay Pending for ever.

The record of a first attempt is committed with its sub-job, and the attempt is handed to its
runtime after the commit returns. When the commit raises although it committed (the answer
was lost: a writer that died after its COMMIT, a caller cancelled meanwhile), the hand-over
never comes, and before this guard the sub-job waited in Pending until the process restarted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cronloop.api import Phase
from cronloop.controllers import job as job_module
from cronloop.controllers.job import START_LOST_AFTER
from cronloop.store import Batch, BatchResult, StoreError

from .harness import Stack, running_stack
from .support import wait_until

JOB = """
apiVersion: cronloop.dev/v1
kind: Job
metadata: {name: lost-start}
spec:
  targets: [eu, us]
  main: {runtime: inline, callable: "cronloop.demos.jobs:report"}
  retries: {limit: 1, backoffSeconds: 1}
"""


@dataclass
class Raised:
    """The batches a test's commit raised for, with a way to wait for them."""

    batches: list[Batch] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, batch: Batch) -> None:
        self.batches.append(batch)
        self.changed.set()

    async def wait_count(self, count: int, *, within: float) -> None:
        # Woken by the commit itself: a commit that raised may have changed nothing stored.
        await wait_until(self.changed, lambda: len(self.batches) >= count, within=within)


def _fans_out(batch: Batch) -> bool:
    """Whether ``batch`` creates sub-jobs: SubJobs, or a one-target run keeping its own."""
    return any(
        obj.kind == "SubJob" or (obj.kind == "Job" and obj.status.get("subJob"))
        for obj in batch.creates
    )


def lose_first_fan_out_answer(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Raised:
    """Make the first commit that creates sub-jobs commit, then raise: its answer is lost."""
    real_commit = stack.store.commit
    lost = Raised()

    async def commit_losing_the_answer(batch: Batch) -> BatchResult:
        result = await real_commit(batch)
        if not lost.batches and _fans_out(batch):
            lost.add(batch)
            raise StoreError("the writer's answer was lost after its commit")
        return result

    monkeypatch.setattr(stack.store, "commit", commit_losing_the_answer)
    return lost


@pytest.mark.looptime
@pytest.mark.parametrize("retries", [1, 0])
async def test_a_start_lost_after_its_commit_fails_the_attempt_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retries: int
) -> None:
    async with running_stack(tmp_path) as stack:
        lost = lose_first_fan_out_answer(stack, monkeypatch)
        started = stack.clock.now()
        await stack.apply(JOB.replace("limit: 1", f"limit: {retries}"))
        job = await stack.wait_job("lost-start", within=10 * START_LOST_AFTER)

        assert lost.batches, "the fan-out's commit was never seen"
        waited = (stack.clock.now() - started).total_seconds()
        assert waited >= START_LOST_AFTER
        subs = await stack.subjobs("lost-start")
        assert len(subs) == 2
        for sub in subs:
            first = sub.status.attempts[0]
            assert (first.phase, first.reason) == (Phase.FAILED, "StartFailed")
            assert "never handed to its runtime" in (first.message or "")
            if retries:
                assert [a.phase for a in sub.status.attempts] == [Phase.FAILED, Phase.SUCCEEDED]
            else:
                assert len(sub.status.attempts) == 1
        assert job.status.phase is (Phase.SUCCEEDED if retries else Phase.FAILED)


CRONJOB = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: lost-fire}
spec:
  schedule: "@every 60s"
  jobTemplate:
    main: {runtime: inline, callable: "cronloop.demos.jobs:report"}
    retries: {limit: 1, backoffSeconds: 1}
"""


@pytest.mark.looptime
async def test_a_scheduled_run_whose_start_was_lost_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_stack(tmp_path) as stack:
        lost = lose_first_fan_out_answer(stack, monkeypatch)
        await stack.apply(CRONJOB)
        # The first run falls due a minute after the CronJob was made.
        await lost.wait_count(1, within=120)
        (run,) = [o for o in lost.batches[0].creates if o.kind == "Job"]
        job = await stack.wait_job(run.name, within=10 * START_LOST_AFTER)
        assert job.status.phase is Phase.SUCCEEDED
        (sub,) = await stack.subjobs(run.name)
        assert [(a.phase, a.reason) for a in sub.status.attempts] == [
            (Phase.FAILED, "StartFailed"),
            (Phase.SUCCEEDED, "Completed"),
        ]
        # One run per scheduled time: the lost answer made no second one of its time.
        times = [j.status.scheduled_time for j in await stack.jobs("lost-fire")]
        assert len(times) == len(set(times))
        assert run.name in [j.metadata.name for j in await stack.jobs("lost-fire")]


@pytest.mark.looptime
async def test_the_starts_remembered_stay_bounded_while_the_store_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every retried pass of a due CronJob records new sessions that no commit kept.
    monkeypatch.setattr(job_module, "STARTS_KEPT", 8)
    async with running_stack(tmp_path) as stack:
        real_commit = stack.store.commit
        failed = Raised()

        async def commit_failing(batch: Batch) -> BatchResult:
            if _fans_out(batch) and len(failed.batches) < 40:
                failed.add(batch)
                raise StoreError("the store is down")
            return await real_commit(batch)

        monkeypatch.setattr(stack.store, "commit", commit_failing)
        names = {f"down-{index}" for index in range(4)}
        for name in sorted(names):
            await stack.apply(CRONJOB.replace("lost-fire", name))
        await failed.wait_count(40, within=600)
        assert len(stack.manager.jobs._recorded) <= 8

        # The store is back: the runs are made and started, none of them lost.
        async def each_cronjob_has_a_succeeded_run() -> bool:
            succeeded = {
                job.status.cron_job.name
                for job in await stack.jobs()
                if job.status.cron_job and job.status.phase is Phase.SUCCEEDED
            }
            return succeeded >= names

        await stack.wait_for(each_cronjob_has_a_succeeded_run, within=600)

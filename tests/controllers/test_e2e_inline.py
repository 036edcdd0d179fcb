"""The controllers end to end on SQLite with the inline runtime, in fake loop time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cronloop.api import Job, JobStatus, ObjectMeta, ObjectRef, Phase
from cronloop.controllers import CRONJOB_LABEL, to_stored

from .harness import START, running_stack

FANOUT = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: report}
spec:
  schedule: "*/10 * * * * *"
  jobTemplate:
    targets: [eu, us, ap]
    prepare: {runtime: inline, callable: "cronloop.demos.jobs:prepare"}
    main: {runtime: inline, callable: "cronloop.demos.jobs:report"}
"""


@pytest.mark.looptime(start=0)
async def test_cronjob_fires_fans_out_and_succeeds(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        await stack.apply(FANOUT)

        async def three_done() -> bool:
            jobs = await stack.jobs("report")
            return sum(1 for j in jobs if j.status.phase is Phase.SUCCEEDED) >= 3

        await stack.wait_for(three_done, within=120)
        jobs = await stack.jobs("report")
        done = [j for j in jobs if j.status.phase is Phase.SUCCEEDED]
        # One run per 10 s slot, each named for its scheduled instant.
        times = [j.status.scheduled_time for j in done[:3]]
        assert all(t is not None and t.second % 10 == 0 for t in times)
        assert len(set(times)) == 3
        first = done[0]
        assert first.status.counts.succeeded == 3
        subs = await stack.subjobs(first.metadata.name)
        assert sorted(s.spec.target for s in subs) == ["ap", "eu", "us"]
        for sub in subs:
            assert sub.status.phase is Phase.SUCCEEDED
            steps = [(a.step.value, a.phase) for a in sub.status.attempts]
            assert steps == [("prepare", Phase.SUCCEEDED), ("main", Phase.SUCCEEDED)]
        cronjob = await stack.cronjob("report")
        assert cronjob.status.started_runs >= 3
        assert cronjob.status.last_schedule_time is not None
        assert cronjob.status.last_schedule_time >= START


HISTORY_OF_ONE = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: tidy}
spec:
  schedule: "0 * * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    main: {runtime: inline, callable: "cronloop.demos.jobs:heartbeat", kwargs: {message: hi}}
"""


@pytest.mark.looptime(start=0)
async def test_history_keeps_the_newest_run_even_when_it_was_triggered_by_hand(
    tmp_path: Path,
) -> None:
    async with running_stack(tmp_path) as stack:
        await stack.apply(HISTORY_OF_ONE)

        async def one_done() -> bool:
            return any(j.status.phase is Phase.SUCCEEDED for j in await stack.jobs("tidy"))

        await stack.wait_for(one_done, within=120)
        await asyncio.sleep(1)  # fake time: the manual run is created a second later
        cronjob = await stack.cronjob("tidy")
        # What `cronloop trigger` creates: a run of the CronJob with no scheduled time.
        manual = Job(
            metadata=ObjectMeta(name="tidy-manual-1", labels={CRONJOB_LABEL: "tidy"}),
            spec=cronjob.spec.job_template,
            status=JobStatus(cron_job=ObjectRef(name="tidy", uid=cronjob.metadata.uid)),
        )
        await stack.store.create(to_stored(manual, owner_uid=cronjob.metadata.uid))
        await stack.wait_job("tidy-manual-1", within=120)

        async def only_manual_kept() -> bool:
            done = [j for j in await stack.jobs("tidy") if j.status.phase is Phase.SUCCEEDED]
            return [j.metadata.name for j in done] == ["tidy-manual-1"]

        await stack.wait_for(only_manual_kept, within=30)

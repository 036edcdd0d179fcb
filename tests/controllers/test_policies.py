"""Every policy combination (concurrency x catch-up x guarantee) on a fake clock.

A CronJob fires every minute and each run takes 90 s, so runs overlap. The scheduler runs for
3.5 minutes, is stopped (running attempts are cancelled and recorded), stays down for 10
minutes, and runs again for 7 minutes. Then the store is checked against the guarantees:
one run per scheduled time, every due time accounted for, Forbid never overlaps, Replace keeps
one live run, AtMostOnce never starts late or twice, AtLeastOnce never skips under catchUp All
and restarts interrupted attempts.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from cronloop.api import Job, Phase
from cronloop.controllers import LoopClock

from .harness import START, Stack, running_stack

SPEC = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {{name: minutely}}
spec:
  schedule: "* * * * *"
  concurrencyPolicy: {concurrency}
  catchUp: {catch_up}
  guarantee: {guarantee}
  successfulJobsHistoryLimit: 1000
  failedJobsHistoryLimit: 1000
  jobTemplate:
    main:
      runtime: inline
      callable: "cronloop.demos.jobs:slow"
      kwargs: {{seconds: 90}}
"""

MISFIRE = timedelta(seconds=60)


async def _all_jobs(stack: Stack) -> list[Job]:
    return await stack.jobs("minutely")


def _minutes(until: object) -> int:
    assert until is not None
    return int((until - START).total_seconds() // 60)  # type: ignore[operator]


@pytest.mark.parametrize("guarantee", ["AtLeastOnce", "AtMostOnce"])
@pytest.mark.parametrize("catch_up", ["None", "Latest", "All"])
@pytest.mark.parametrize("concurrency", ["Allow", "Forbid", "Replace"])
@pytest.mark.looptime(start=0)
async def test_policy_combination(
    tmp_path: Path, concurrency: str, catch_up: str, guarantee: str
) -> None:
    clock = LoopClock(START)
    spec = SPEC.format(concurrency=concurrency, catch_up=catch_up, guarantee=guarantee)
    async with running_stack(tmp_path, clock=clock) as stack:
        await stack.apply(spec)
        await asyncio.sleep(3 * 60 + 30)
    # Down from 12:03:30 to 12:13:30: ten scheduled times (12:04 .. 12:13) pass unseen.
    await asyncio.sleep(10 * 60)
    async with running_stack(tmp_path, clock=clock) as stack:
        await asyncio.sleep(7 * 60)
        jobs = await _all_jobs(stack)
        cronjob = await stack.cronjob("minutely")
        subjobs = {j.metadata.name: await stack.subjobs(j.metadata.name) for j in jobs}

    # 1. One run (or skip record) per scheduled time, ever.
    times = Counter(j.status.scheduled_time for j in jobs)
    assert all(n == 1 for n in times.values()), times.most_common(3)

    # 2. Every due time up to the cursor is accounted for by exactly one counter.
    status = cronjob.status
    due = _minutes(status.last_schedule_time)
    assert status.started_runs + status.skipped_runs + status.missed_runs == due

    started = [j for j in jobs if j.status.phase is not Phase.SKIPPED]
    skipped = [j for j in jobs if j.status.phase is Phase.SKIPPED]
    assert len(started) == status.started_runs

    # 3. Forbid: runs never overlap in time.
    if concurrency == "Forbid":
        spans = sorted(
            (j.status.start_time, j.status.completion_time or clock.now())
            for j in started
            if j.status.start_time is not None
        )
        for (_, end), (begin, _) in itertools.pairwise(spans):
            assert begin >= end, f"overlapping runs under Forbid: {spans}"

    # 4. Replace: at most one live run, every replaced run was cancelled.
    if concurrency == "Replace":
        live = [j for j in started if not j.status.phase.terminal]
        assert len(live) <= 1
        assert any(j.status.phase is Phase.CANCELLED for j in started)

    if guarantee == "AtMostOnce":
        for job in started:
            # 5. Never started late, and never a second attempt of one target.
            assert job.status.scheduled_time is not None
            if job.status.start_time is not None:
                assert job.status.start_time - job.status.scheduled_time <= MISFIRE
            for sub in subjobs[job.metadata.name]:
                assert len(sub.status.attempts) <= 1
        # After the downtime only the newest time (30 s late) may start.
        restarted = [
            t
            for t in times
            if t is not None
            and t > START + timedelta(minutes=3)
            and t <= START + timedelta(minutes=13)
        ]
        late_starts = [
            j
            for j in started
            if j.status.scheduled_time in restarted
            and j.status.scheduled_time < START + timedelta(minutes=13)
        ]
        assert late_starts == []
    else:
        # 6. AtLeastOnce: interrupted attempts ran again after the restart.
        interrupted = [
            sub
            for subs in subjobs.values()
            for sub in subs
            if any(a.reason == "RuntimeShutdown" for a in sub.status.attempts)
        ]
        assert interrupted, "the shutdown at 12:03:30 interrupted at least one run"
        for sub in interrupted:
            assert sub.status.attempts[-1].reason != "RuntimeShutdown"
        assert status.missed_runs == 0
        downtime = {START + timedelta(minutes=m) for m in range(4, 14)}
        if catch_up == "All":
            # 7. Nothing from the downtime is skipped.
            assert not [j for j in skipped if j.status.scheduled_time in downtime]
            if concurrency == "Allow":
                assert downtime <= set(times)
        else:
            reasons = {j.status.reason for j in skipped if j.status.scheduled_time in downtime}
            assert reasons == {"SupersededByLatest" if catch_up == "Latest" else "CatchUpNone"}

"""Runs made ahead (``PREPARE_AHEAD``): a CronJob's next run is made, all but its start time,
by a pass PREPARE_AHEAD seconds before its scheduled time (the planning pass itself when the
run is that near), and the pass at the scheduled time starts exactly that run. Nothing of it
is stored or counted as recorded before then, and a CronJob changed meanwhile gets a run of
its new version."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cronloop.api import Phase
from cronloop.controllers import PREPARE_AHEAD, CronJobController

from .harness import START, Stack, running_stack


def _cronjob(name: str, every: int, message: str = "hi") -> str:
    return f"""
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {{name: {name}}}
spec:
  schedule: "@every {every}s"
  jobTemplate:
    main:
      runtime: inline
      callable: "cronloop.demos.jobs:heartbeat"
      kwargs: {{message: {message}}}
"""


class _Prepared:
    """Notes every run the controller makes ahead (name, scheduled time, the clock then)."""

    def __init__(self, controller: CronJobController, stack: Stack) -> None:
        self.made: list[tuple[str, datetime, datetime]] = []
        self.changed = asyncio.Event()
        self._controller = controller
        self._stack = stack
        self._prepare = controller._prepare

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def noting(cron_pass: Any, now: datetime) -> None:
            before = cron_pass.compiled.prepared
            self._prepare(cron_pass, now)
            after = cron_pass.compiled.prepared
            if after is not None and after is not before:
                self.made.append((cron_pass.name, after.scheduled, self._stack.clock.now()))
                self.changed.set()

        monkeypatch.setattr(self._controller, "_prepare", noting)

    async def wait(self, count: int, *, within: float) -> None:
        async with asyncio.timeout(within):  # loop time
            while len(self.made) < count:
                self.changed.clear()
                await self.changed.wait()

    def runs(self, name: str) -> Iterator[Any]:
        for compiled in self._controller._compiled.values():
            if compiled.cronjob.metadata.name == name and compiled.prepared is not None:
                yield compiled.prepared


@pytest.mark.looptime(start=0)
async def test_a_near_first_run_is_made_by_the_planning_pass_a_far_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    near, far = int(PREPARE_AHEAD) // 2, int(PREPARE_AHEAD) * 6
    async with running_stack(tmp_path) as stack:
        prepared = _Prepared(stack.manager.cronjobs, stack)
        prepared.install(monkeypatch)
        await stack.apply(_cronjob("near", near) + "---" + _cronjob("far", far))
        await prepared.wait(1, within=1.0)
        assert prepared.made == [("near", START + timedelta(seconds=near), START)]
        assert not list(prepared.runs("far"))
        assert not await stack.jobs()


@pytest.mark.looptime(start=0)
async def test_a_run_is_made_ahead_by_a_pass_woken_for_it_and_started_as_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = int(PREPARE_AHEAD) * 6
    scheduled = START + timedelta(seconds=every)
    async with running_stack(tmp_path) as stack:
        prepared = _Prepared(stack.manager.cronjobs, stack)
        prepared.install(monkeypatch)
        await stack.apply(_cronjob("minutely", every))
        await prepared.wait(1, within=every)
        # Woken PREPARE_AHEAD before the run for it (loop time is exact).
        assert prepared.made == [
            ("minutely", scheduled, scheduled - timedelta(seconds=PREPARE_AHEAD))
        ]
        (run,) = prepared.runs("minutely")
        assert run.plan is not None
        (start,) = run.plan.starts
        # Made, not recorded: nothing is stored, and its attempt is not yet one to watch for
        # a lost start.
        assert not await stack.jobs()
        assert start.session not in stack.manager.jobs._recorded

        async def fired() -> bool:
            jobs = await stack.jobs("minutely")
            return any(j.status.phase is Phase.SUCCEEDED for j in jobs)

        await stack.wait_for(fired, within=PREPARE_AHEAD * 2)
        (job,) = await stack.jobs("minutely")
        assert job.metadata.uid == run.uid
        assert job.status.scheduled_time == scheduled
        assert job.status.start_time is not None
        assert job.status.start_time >= scheduled
        (sub,) = await stack.subjobs(job.metadata.name)
        # One target: the sub-job is kept in the run (no SubJob of its own was made).
        assert run.plan.objects == []
        assert sub.metadata.name == f"{job.metadata.name}-default"
        assert sub.status.attempts[0].runtime is not None
        assert sub.status.attempts[0].runtime["session"] == start.session
        assert sub.status.session_id == start.session


@pytest.mark.looptime(start=0)
async def test_a_run_made_for_an_older_version_of_its_cronjob_is_not_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = int(PREPARE_AHEAD) * 6
    async with running_stack(tmp_path) as stack:
        prepared = _Prepared(stack.manager.cronjobs, stack)
        prepared.install(monkeypatch)
        await stack.apply(_cronjob("minutely", every, message="old"))
        await prepared.wait(1, within=every)
        (old,) = prepared.runs("minutely")
        await stack.apply(_cronjob("minutely", every, message="new"))

        async def fired() -> bool:
            return any(j.status.phase.terminal for j in await stack.jobs("minutely"))

        await stack.wait_for(fired, within=PREPARE_AHEAD * 2)
        (job,) = await stack.jobs("minutely")
        assert job.metadata.uid != old.uid
        assert job.spec.main.model_dump()["kwargs"] == {"message": "new"}

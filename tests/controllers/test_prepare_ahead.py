"""A CronJob whose next run is near has its run template made by the pass that planned it,
ahead of the run; one whose next run is far away does not (start-up would pay for runs that
are hours off)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cronloop.api import Phase
from cronloop.controllers import PREPARE_AHEAD

from .harness import running_stack

_CRONJOBS = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: near}
spec:
  schedule: "@every %ds"
  jobTemplate:
    main: {runtime: inline, callable: "cronloop.demos.jobs:heartbeat", kwargs: {message: hi}}
---
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: far}
spec:
  schedule: "@every %ds"
  jobTemplate:
    main: {runtime: inline, callable: "cronloop.demos.jobs:heartbeat", kwargs: {message: hi}}
"""
CRONJOBS = _CRONJOBS.replace("%ds", f"{int(PREPARE_AHEAD) // 2}s", 1).replace(
    "%ds", f"{int(PREPARE_AHEAD) * 6}s", 1
)


@pytest.mark.looptime(start=0)
async def test_a_near_first_run_is_prepared_by_the_planning_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_stack(tmp_path) as stack:
        controller = stack.manager.cronjobs
        committed = controller._committed
        planned = asyncio.Event()

        def noting(cron_pass: Any, result: Any, now: datetime) -> Any:
            outcome = committed(cron_pass, result, now)
            if {"near", "far"} <= controller._next_times.keys():
                planned.set()
            return outcome

        monkeypatch.setattr(controller, "_committed", noting)
        await stack.apply(CRONJOBS)
        async with asyncio.timeout(PREPARE_AHEAD / 4):  # loop time: before the first run
            await planned.wait()
        assert not await stack.jobs()  # nothing has fired yet
        made = {c.cronjob.metadata.name: c._runs for c in controller._compiled.values()}
        assert made["near"] is not None
        assert made["far"] is None
        prepared = made["near"]

        async def fired() -> bool:
            return any(j.status.phase is Phase.SUCCEEDED for j in await stack.jobs("near"))

        await stack.wait_for(fired, within=PREPARE_AHEAD)
        # The run was filled in from the template made ahead, not a new one.
        (compiled,) = [
            c for c in controller._compiled.values() if c.cronjob.metadata.name == "near"
        ]
        assert compiled._runs is prepared

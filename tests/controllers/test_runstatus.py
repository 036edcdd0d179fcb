"""The statuses the Job controller writes as JSON are exactly what the typed models dump.

The controller builds sub-job and job statuses as dicts (cronloop.controllers.runstatus) for
speed; the models stay the schema. Every status it ever stores must validate and dump back to
the very same JSON: a key in the wrong case, a time in another format or a ``None`` left in
would show as a difference here.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from cronloop.api import (
    CronJobStatus,
    Job,
    JobStatus,
    Phase,
    PhaseCounts,
    StepName,
    SubJobStatus,
)
from cronloop.controllers import (
    AttemptRecord,
    counts_record,
    dump_model,
    phase_of,
    step_of,
    typed,
    with_fields,
)

from .harness import running_stack
from .scripted import ScriptedRuntime

JOB = """
apiVersion: cronloop.dev/v1
kind: Job
metadata: {name: mixed}
spec:
  targets: [eu, us, ap, sa]
  prepare: {runtime: inline, callable: "cronloop.demos.jobs:prepare"}
  main: {runtime: inline, callable: "cronloop.demos.jobs:report"}
  retries: {limit: 1, backoffSeconds: 1}
  successPolicy: {mode: AtLeast, n: 2}
"""


_STATUSES: dict[str, type[BaseModel]] = {
    "SubJob": SubJobStatus,
    "Job": JobStatus,
    "CronJob": CronJobStatus,
}


def _round_trips(kind: str, status: dict[str, Any]) -> None:
    assert dump_model(_STATUSES[kind].model_validate(status)) == status


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.looptime(start=0)
async def test_every_stored_status_is_the_models_own_dump(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    runtime = ScriptedRuntime()
    async with running_stack(tmp_path, runtimes={"inline": runtime}) as stack:
        start = await stack.store.current_revision()
        await stack.apply(JOB)
        reported: set[str] = set()

        async def finished() -> bool:
            if typed(await stack.store.get("Job", "mixed"), Job).status.phase.terminal:
                return True
            for attempt_id in list(runtime.started):
                if attempt_id in reported:
                    continue
                reported.add(attempt_id)
                runtime.report(attempt_id, 1, Phase.RUNNING)
                # Some attempts fail (a retry follows), others succeed.
                ending = Phase.FAILED if rng.random() < 0.3 else Phase.SUCCEEDED
                runtime.report(attempt_id, 2, ending)
                await asyncio.sleep(0)
            return False

        await stack.wait_for(finished, within=600)
        seen = 0
        async with asyncio.timeout(30):
            async for event in stack.store.watch(kinds=("Job", "SubJob"), from_revision=start):
                _round_trips(event.object.kind, event.object.status)
                seen += 1
                if event.revision >= await stack.store.current_revision():
                    break
    assert seen > 8


CRONJOBS = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: often}
spec:
  schedule: "*/20 * * * * *"
  successfulJobsHistoryLimit: 2
  jobTemplate:
    main: {runtime: inline, callable: "cronloop.demos.jobs:heartbeat"}
---
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: forbidden}
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  guarantee: AtMostOnce
  jobTemplate:
    main: {runtime: inline, callable: "cronloop.demos.jobs:slow", kwargs: {seconds: 90}}
---
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: once}
spec:
  schedule: "@at 2026-01-05T12:00:30Z"
  jobTemplate:
    main: {runtime: inline, callable: "cronloop.demos.jobs:heartbeat"}
"""


@pytest.mark.looptime(start=0)
async def test_every_stored_cronjob_status_is_the_models_own_dump(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        start = await stack.store.current_revision()
        await stack.apply(CRONJOBS)
        # Runs, skips (Forbid), prunes, the one-shot firing; read halfway between two of
        # often's times (12:05:00 and 12:05:20): reading the feed below lets the fake clock
        # run on to the next.
        await asyncio.sleep(5 * 60 + 10)
        once = (await stack.cronjob("once")).status
        often = (await stack.cronjob("often")).status
        forbidden = (await stack.cronjob("forbidden")).status
        statuses = 0
        async with asyncio.timeout(30):
            async for event in stack.store.watch(kinds=("CronJob",), from_revision=start):
                if event.object.status:
                    _round_trips("CronJob", event.object.status)
                    statuses += 1
                if event.revision >= await stack.store.current_revision():
                    break
    assert statuses > 20
    assert once.started_runs == 1
    assert often.started_runs == 15
    assert forbidden.skipped_runs >= 2


def test_with_fields_leaves_out_what_is_set_to_none() -> None:
    attempt: AttemptRecord = {
        "number": 1,
        "step": "main",
        "phase": "Running",
        "exitCode": 3,
        "runtime": {},
    }
    changed = with_fields(attempt, phase="Succeeded", exitCode=None)
    assert changed == {"number": 1, "step": "main", "phase": "Succeeded", "runtime": {}}
    assert attempt["exitCode"] == 3  # the stored dict is never changed


def test_phases_and_steps_read_back_and_refuse_nonsense() -> None:
    assert phase_of(None) is Phase.PENDING
    assert phase_of("TimedOut") is Phase.TIMED_OUT
    assert step_of("prepare") is StepName.PREPARE
    with pytest.raises(ValueError, match="Sleeping"):
        phase_of("Sleeping")
    with pytest.raises(ValueError, match="cleanup"):
        step_of("cleanup")


def test_counts_are_the_models_dump() -> None:
    phases = [Phase.SUCCEEDED, Phase.FAILED, Phase.SUCCEEDED, Phase.TIMED_OUT]
    assert counts_record(phases) == dump_model(PhaseCounts.of(phases))
    assert counts_record([]) == dump_model(PhaseCounts())

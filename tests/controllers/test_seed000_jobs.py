"""Seed 000 at the job level: sub-jobs reporting out of order never move a job backwards.

Eight regions each run a prepare and a main step. Their reports are delivered in a seeded
random interleaving across sub-jobs, with per-attempt reports sometimes reversed (Succeeded
before Running), duplicated, or stamped with a stale session. Whatever the order, every phase
the store ever recorded for the job and for each sub-job only moves forward, stale reports
change nothing, and the job ends Succeeded.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from cronloop.api import Job, Phase, SubJob
from cronloop.controllers import typed

from .harness import running_stack
from .scripted import ScriptedRuntime

REGIONS = ["eu", "us", "ap", "sa", "af", "me", "oc", "an"]
JOB = f"""
apiVersion: cronloop.dev/v1
kind: Job
metadata: {{name: fanout}}
spec:
  targets: [{", ".join(REGIONS)}]
  prepare: {{runtime: inline, callable: "cronloop.demos.jobs:prepare"}}
  main: {{runtime: inline, callable: "cronloop.demos.jobs:report"}}
"""


async def _deliver(runtime: ScriptedRuntime, rng: random.Random, done: set[str]) -> None:
    """Report every attempt started so far and not yet reported, in a random interleaving."""
    batch: list[tuple[str, int, Phase, str | None]] = []
    for attempt_id in runtime.started:
        if attempt_id in done:
            continue
        done.add(attempt_id)
        reports = [(1, Phase.RUNNING), (2, Phase.SUCCEEDED)]
        if rng.random() < 0.3:
            reports.reverse()  # Succeeded overtakes Running: Running is then stale
        if rng.random() < 0.3:
            reports.append(rng.choice(reports))  # a duplicate
        batch.extend((attempt_id, seq, phase, None) for seq, phase in reports)
        if rng.random() < 0.3:
            batch.append((attempt_id, 1, Phase.RUNNING, "stale-session"))
    rng.shuffle(batch)
    for attempt_id, seq, phase, session in batch:
        runtime.report(attempt_id, seq, phase, session=session)
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.looptime(start=0)
async def test_out_of_order_reports_never_regress(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    runtime = ScriptedRuntime()
    async with running_stack(tmp_path, runtimes={"inline": runtime}) as stack:
        start = await stack.store.current_revision()
        await stack.apply(JOB)
        done: set[str] = set()

        async def finished() -> bool:
            # Runs after every store change: report whatever attempts were dispatched since.
            if typed(await stack.store.get("Job", "fanout"), Job).status.phase.terminal:
                return True
            await _deliver(runtime, rng, done)
            return False

        await stack.wait_for(finished, within=120)
        job = typed(await stack.store.get("Job", "fanout"), Job)
        history: dict[str, list[Phase]] = {}
        async with asyncio.timeout(30):
            async for event in stack.store.watch(kinds=("Job", "SubJob"), from_revision=start):
                status = event.object.status
                history.setdefault(event.object.name, []).append(
                    Phase(status.get("phase", "Pending"))
                )
                if event.revision >= await stack.store.current_revision():
                    break
        subjobs = await stack.subjobs("fanout")

    assert job.status.phase is Phase.SUCCEEDED
    assert job.status.counts.succeeded == len(REGIONS)
    for name, phases in history.items():
        ranks = [p.rank for p in phases]
        assert ranks == sorted(ranks), f"{name} moved backwards: {phases}"
    for sub in subjobs:
        assert isinstance(sub, SubJob)
        assert [a.step.value for a in sub.status.attempts] == ["prepare", "main"]
        assert all(a.phase is Phase.SUCCEEDED for a in sub.status.attempts)

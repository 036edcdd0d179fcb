"""A run with one target is one record: its sub-job is kept in the Job's status.

Its sub-job is driven like a stored one (attempts, sessions, retries, the job's phase), is
shown as a SubJob made from the Job (cronloop.controllers.subjobs), and costs no SubJob
object: the run is a create and a status write of one Job.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cronloop.api import Phase
from cronloop.controllers import get_subjob, list_subjobs, typed, with_embedded_subjobs
from cronloop.store import EventType, WatchEvent

from .harness import running_stack

ONE_TARGET = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: solo}
spec:
  schedule: "*/10 * * * * *"
  jobTemplate:
    main: {runtime: inline, callable: "cronloop.demos.jobs:heartbeat", kwargs: {message: hi}}
"""

FAILS_TWICE = """
apiVersion: cronloop.dev/v1
kind: Job
metadata: {name: flaky}
spec:
  targets: [eu]
  retries: {limit: 1, backoffSeconds: 1}
  main: {runtime: inline, callable: "tests.runtimes.inline_jobs:exits", kwargs: {code: 3}}
"""


@pytest.mark.looptime(start=0)
async def test_a_one_target_run_is_one_record_and_shows_its_subjob(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        revision = await stack.store.current_revision()
        await stack.apply(ONE_TARGET)

        async def done() -> bool:
            return any(j.status.phase is Phase.SUCCEEDED for j in await stack.jobs("solo"))

        await stack.wait_for(done, within=60)
        job = next(j for j in await stack.jobs("solo") if j.status.phase is Phase.SUCCEEDED)
        name = job.metadata.name
        assert (await stack.store.list("SubJob")).items == []
        # Every write of the run is a write of its Job: created fanned out (its sub-job's
        # first attempt recorded in it), then its changes; no SubJob was ever written.
        events: list[WatchEvent] = []
        async with asyncio.timeout(10):
            feed = stack.store.watch(kinds=["Job", "SubJob"], from_revision=revision)
            async for event in feed:
                if name in event.object.name:
                    events.append(event)
                if event.object.name == name and event.object.status["phase"] == "Succeeded":
                    break
        assert {e.object.kind for e in events} == {"Job"}
        assert events[0].type is EventType.ADDED
        assert events[0].object.status["subJob"]["attempts"][0]["phase"] == "Pending"
        assert all(e.type is EventType.MODIFIED for e in events[1:])

        (sub,) = await stack.subjobs(name)
        assert sub.metadata.name == f"{name}-default"
        assert sub.spec.job.name == name
        assert sub.spec.job.uid == job.metadata.uid
        assert sub.status.phase is Phase.SUCCEEDED
        ((attempt_phase, session),) = [(a.phase, a.runtime["session"]) for a in sub.status.attempts]
        assert attempt_phase is Phase.SUCCEEDED
        assert sub.status.session_id == session
        assert job.status.counts.succeeded == 1
        stored = await stack.store.get("Job", name)
        assert typed(await get_subjob(stack.store, sub.metadata.name), type(sub)) == sub
        listed = (await list_subjobs(stack.store, owner_uid=stored.uid)).items
        assert [s.name for s in listed] == [sub.metadata.name]

        seen: list[WatchEvent] = []
        async with asyncio.timeout(10):
            feed = stack.store.watch(kinds=["Job", "SubJob"], from_revision=revision)
            async for event in with_embedded_subjobs(aiter(feed), ["Job", "SubJob"]):
                if name in event.object.name:
                    seen.append(event)
                if event.object.name == name and event.object.status["phase"] == "Succeeded":
                    break
        # Each change of the run shows its sub-job's change first, as a stored one's would.
        assert [e.object.kind for e in seen] == ["SubJob", "Job"] * len(events)
        assert [e.type for e in seen[::2]] == [e.type for e in events]
        assert [e.revision for e in seen[::2]] == [e.revision for e in seen[1::2]]
        assert seen[-2].object.status["phase"] == "Succeeded"


@pytest.mark.looptime(start=0)
async def test_a_kept_subjob_is_retried_and_fails_its_run(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        await stack.apply(FAILS_TWICE)
        job = await stack.wait_job("flaky", within=60)
        assert job.status.phase is Phase.FAILED
        assert job.status.counts.failed == 1
        assert job.status.message == "0 of 1 targets succeeded; eu: sys.exit(3)"
        assert (await stack.store.list("SubJob")).items == []
        (sub,) = await stack.subjobs("flaky")
        assert sub.metadata.name == "flaky-eu"
        assert [(a.number, a.phase, a.exit_code) for a in sub.status.attempts] == [
            (1, Phase.FAILED, 3),
            (2, Phase.FAILED, 3),
        ]
        sessions = {a.runtime["session"] for a in sub.status.attempts}
        assert len(sessions) == 2
        assert sub.status.session_id in sessions

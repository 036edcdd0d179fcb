"""A running controller stack for tests: a real SQLite store, the inline runtime, a Manager.

Time is the loop's: tests run under ``@pytest.mark.looptime`` and the manager's clock is a
:class:`LoopClock`, so a day of schedules passes in milliseconds and every instant is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cronloop.api import CronJob, Job, Phase, Resource, SubJob, load_resources
from cronloop.controllers import (
    JOB_LABEL,
    AdmissionController,
    LoopClock,
    Manager,
    from_stored,
    list_subjobs,
    to_stored,
    typed,
)
from cronloop.runtimes import InlineRuntime, Runtime
from cronloop.store import Store, open_store

START = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


@dataclass
class Stack:
    store: Store
    manager: Manager
    clock: LoopClock

    async def apply(self, text: str) -> list[Resource]:
        return [
            from_stored(await self.store.apply(to_stored(resource)))
            for resource in load_resources(text)
        ]

    async def jobs(self, cronjob: str | None = None) -> list[Job]:
        items = (await self.store.list("Job")).items
        jobs = [typed(o, Job) for o in items]
        if cronjob is not None:
            jobs = [j for j in jobs if j.status.cron_job and j.status.cron_job.name == cronjob]
        return sorted(jobs, key=lambda j: (j.status.scheduled_time or START, j.metadata.name))

    async def subjobs(self, job: str) -> list[SubJob]:
        """The sub-jobs of ``job``: stored, or kept in the Job (one target)."""
        items = (await list_subjobs(self.store, labels={JOB_LABEL: job})).items
        return [typed(o, SubJob) for o in items]

    async def cronjob(self, name: str) -> CronJob:
        return typed(await self.store.get("CronJob", name), CronJob)

    async def wait_for(
        self, predicate: Callable[[], Awaitable[bool]], *, within: float = 600.0
    ) -> None:
        """Re-check ``predicate`` after every store change, for at most ``within`` seconds."""
        async with asyncio.timeout(within):
            revision = await self.store.current_revision()
            if await predicate():
                return
            async for _ in self.store.watch(from_revision=revision):
                if await predicate():
                    return

    async def wait_job(self, name: str, *, within: float = 600.0) -> Job:
        async def done() -> bool:
            try:
                job = typed(await self.store.get("Job", name), Job)
            except Exception:
                return False
            return job.status.phase.terminal

        await self.wait_for(done, within=within)
        return typed(await self.store.get("Job", name), Job)


@contextlib.asynccontextmanager
async def running_stack(
    tmp_path: Path,
    *,
    runtimes: dict[str, Runtime] | None = None,
    start: datetime = START,
    clock: LoopClock | None = None,
    resync_period: float = 30.0,
    admission: AdmissionController | None = None,
    tune_gc: bool = False,
) -> AsyncIterator[Stack]:
    """A manager on the store in ``tmp_path``; pass the same ``clock`` to a second stack to
    restart on the same store after fake downtime."""
    clock = clock or LoopClock(start)
    # The executor writer keeps looptime from moving the clock while a write is in flight.
    store = await open_store(tmp_path / "cronloop.db", clock=clock.now, group_commit=False)
    inline = InlineRuntime()
    all_runtimes: dict[str, Runtime] = {"inline": inline, **(runtimes or {})}
    manager = Manager(
        store,
        all_runtimes,
        log_dir=tmp_path / "logs",
        clock=clock,
        resync_period=resync_period,
        admission=admission,
        tune_gc=tune_gc,
    )
    task = asyncio.create_task(manager.run())
    try:
        async with asyncio.timeout(60):
            await manager.wait_ready()
        yield Stack(store, manager, clock)
    finally:
        manager.stop()
        async with asyncio.timeout(60):
            await task
        await store.close()


__all__ = ["START", "Phase", "Stack", "running_stack"]

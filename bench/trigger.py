"""Trigger punctuality and throughput: cronloop against ``loop.call_at`` and APScheduler 3.11.

``python -m bench trigger``. Method, baselines and the caveats are in docs/bench-trigger.md;
this module adds the cronloop subject: one CronJob per run whose schedule names the run's
instant, all in one SQLite store opened with ``synchronous=FULL`` (the same durability as the
APScheduler row), driven by the real Manager with the inline runtime, as ``cronloop up`` runs
it. A run counts as started when its job's first statement runs; by then its Job record
(unique on (CronJob uid, scheduled time)) and its SubJob with the dispatched attempt are
committed.

The issue's loads, on the exact instants every subject gets: the burst (10,000 runs due at
one instant) and the even spread (10,000 over 5 s, one every 0.5 ms) use one-shot schedules,
``@at <instant>`` (like APScheduler's ``date`` trigger that its row uses); the per-second load
(2,000 runs due at each of 5 whole seconds, ``Scenario.per_second``) uses six-field cron
expressions naming each second, so that row also pays for evaluating cron schedules.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import Comparison
from bench.lateness import LatencyStats, Scenario, StartLog, comparisons
from bench.trigger_baselines import BASELINES, measure_subjects
from cronloop.api import CronJob, CronJobSpec, InlineStep, JobSpec, ObjectMeta
from cronloop.cli.eventloop import loop_factory
from cronloop.controllers import Manager, to_stored
from cronloop.runtimes import InlineRuntime
from cronloop.store import Store, open_store

__all__ = ["cronloop_job", "measure_cronloop", "run", "scenarios"]

_LOG: StartLog | None = None
#: How long after the last instant runs may still start before they count as missed.
_WAIT_AFTER_LAST_S = 600.0
#: Full-size repeats: a cronloop repeat of 10,000 runs takes minutes at today's throughput.
_FULL_REPEATS = 3


async def cronloop_job(index: int) -> None:
    """The no-op inline job: its first statement records the start."""
    assert _LOG is not None
    _LOG.record(index)


def scenarios(quick: bool) -> list[Scenario]:
    """The issue's loads, and the spread at cron resolution (see the module docstring)."""
    if quick:
        return [Scenario.burst(1_000), Scenario.spread(1_000, 1.0), Scenario.per_second(1_000, 2)]
    return [Scenario.burst(10_000), Scenario.spread(10_000, 5.0), Scenario.per_second(10_000, 5)]


def _schedule_at(instant: float, scenario: Scenario) -> str:
    moment = datetime.fromtimestamp(instant, UTC)
    if scenario.kind == "per_second":
        return f"{moment.second} {moment.minute} {moment.hour} {moment.day} {moment.month} *"
    return f"@at {moment.isoformat()}"


async def _populate(store: Store, scenario: Scenario, instants: list[float]) -> None:
    batch = []
    for index, instant in enumerate(instants):
        cronjob = CronJob(
            metadata=ObjectMeta(name=f"run-{index}"),
            spec=CronJobSpec(
                schedule=_schedule_at(instant, scenario),
                job_template=JobSpec(
                    main=InlineStep(
                        runtime="inline",
                        callable="bench.trigger:cronloop_job",
                        kwargs={"index": index},
                    )
                ),
            ),
        )
        batch.append(to_stored(cronjob))
        if len(batch) == 1_000:
            await store.create_many(batch)
            batch = []
    if batch:
        await store.create_many(batch)


async def _attempt(
    scenario: Scenario, directory: Path, budget: float
) -> tuple[LatencyStats | None, float]:
    """One try: returns (stats, setup seconds), or (None, setup) if setup overran ``t0``."""
    global _LOG
    log = StartLog(scenario.n)
    _LOG = log
    t0 = math.ceil(time.time() + budget + scenario.lead_s)
    instants = scenario.instants(t0)
    began = time.time()
    store = await open_store(directory / "cronloop.db", synchronous="FULL", writer="process")
    # As ``cronloop up`` runs it (tune_gc: see cronloop.controllers.heap).
    manager = Manager(store, {"inline": InlineRuntime()}, log_dir=directory / "logs", tune_gc=True)
    task: asyncio.Task[None] | None = None
    try:
        await _populate(store, scenario, instants)
        task = asyncio.create_task(manager.run())
        await manager.wait_ready()
        # Set-up ends when every CronJob was reconciled once and waits for its time. The
        # manager has no signal for that, so set-up polls its counters (before t0, outside
        # the measured window).
        while manager.statistics().cronjob_reconciles < scenario.n:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        setup_s = time.time() - began
        if time.time() > t0 - scenario.lead_s / 2:
            return None, setup_s
        # Runs not started within the bound count as missed (never as a crash of the bench).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(instants[-1] - time.time() + _WAIT_AFTER_LAST_S):
                await log.wait_all_async()
        pairs = log.pairs(instants)
        return LatencyStats.from_pairs(
            pairs, missed=scenario.n - len(pairs), setup_s=setup_s
        ), setup_s
    finally:
        manager.stop()
        if task is not None:
            await task
        await store.close()


def measure_cronloop(scenario: Scenario, /, *, tmp_dir: Path) -> LatencyStats:
    """One measurement of cronloop on ``scenario`` (see the module docstring)."""
    budget = max(2.0, scenario.n / 2_000)
    for attempt in range(4):
        directory = tmp_dir / f"try-{attempt}"
        directory.mkdir(parents=True, exist_ok=True)
        # On the loop ``cronloop up`` runs on (see cronloop.cli.eventloop). The manager gives
        # the collector back as it was when it stops (controllers.heap), so the baselines
        # measured in the same process get it as they ship.
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            stats, setup_s = runner.run(_attempt(scenario, directory, budget))
        if stats is not None:
            return stats
        budget = setup_s * 1.5
    raise RuntimeError(f"cronloop: set-up never finished before t0 (budget {budget:.1f}s)")


def run(quick: bool) -> list[Comparison]:
    rows: list[Comparison] = []
    for scenario in scenarios(quick):
        results = measure_subjects(
            scenario,
            {**BASELINES, "cronloop": measure_cronloop},
            repeats=2 if quick else _FULL_REPEATS,
        )
        rows += comparisons(scenario, results)
    return rows

"""Baselines of the trigger punctuality/throughput benchmark: bare ``loop.call_at`` and APScheduler.

The issue asks for cronloop's lateness and durable runs/s on two loads (10,000 runs due in the
same second, and 10,000 spread over 5 s), next to two baselines measured in the same run:

* ``call_at`` is the floor: one bare asyncio loop with a ``loop.call_at`` callback per run. It
  keeps no record of anything, so it is what "no scheduler and no durability" costs.
  ``call_at_uvloop`` is the same floor on uvloop, the loop cronloop runs on.
* ``apscheduler`` is APScheduler 3.11 with its SQLAlchemy job store on a SQLite file: one
  one-shot ``date`` job per run, which the scheduler deletes from the store when it submits it
  (that deletion is APScheduler's durable record that the run happened).

Every ``measure_*`` function here is **synchronous**: it creates and tears down its own event
loop or scheduler thread, so call it from plain code (not from inside a running event loop).
The cronloop row belongs to another module; docs/bench-trigger.md says what it must return.

Run ``.venv/bin/python -m bench.trigger_baselines [--quick]`` for a table of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from bench.lateness import (
    LatencyStats,
    Measure,
    Scenario,
    StartLog,
    median_stats,
    standard_scenarios,
)
from cronloop.cli.eventloop import loop_factory

__all__ = [
    "BASELINES",
    "ApschedulerConfig",
    "best_apscheduler_config",
    "main",
    "measure_apscheduler",
    "measure_baselines",
    "measure_call_at",
    "measure_call_at_uvloop",
    "measure_subjects",
]

# How long after its last scheduled instant a subject may take to start every run before the
# stragglers are counted as missed. Generous: a slow scheduler is reported, not cut short.
_FINISH_GRACE_S = 120.0


def measure_call_at(scenario: Scenario, *, tmp_dir: Path) -> LatencyStats:
    """The floor: ``n`` bare ``loop.call_at`` callbacks, each recording its start.

    Wall-clock instants are converted to loop time once, just before scheduling. Nothing is
    written anywhere (``tmp_dir`` is accepted for a uniform signature and left untouched), so
    this row has no durability at all. Synchronous: runs its own event loop.
    """
    del tmp_dir  # the floor writes nothing
    return asyncio.run(_call_at(scenario))


def measure_call_at_uvloop(scenario: Scenario, *, tmp_dir: Path) -> LatencyStats:
    """The same floor on uvloop, the loop ``cronloop up`` (and so the cronloop row) runs on."""
    del tmp_dir
    with asyncio.Runner(loop_factory=loop_factory("uvloop")) as runner:
        return runner.run(_call_at(scenario))


async def _call_at(scenario: Scenario) -> LatencyStats:
    loop = asyncio.get_running_loop()
    log = StartLog(scenario.n)
    setup_started = time.perf_counter()
    instants = scenario.instants(time.time() + scenario.lead_s)
    # One offset for every run: both clocks tick at the same rate over a few seconds, and
    # re-reading them per run would only add noise.
    wall_to_loop = loop.time() - time.time()
    for index, at in enumerate(instants):
        loop.call_at(at + wall_to_loop, log.record, index)
    setup_s = time.perf_counter() - setup_started
    await _wait_all_started(log, instants[-1] + _FINISH_GRACE_S)
    pairs = log.pairs(instants)
    return LatencyStats.from_pairs(pairs, missed=scenario.n - len(pairs), setup_s=setup_s)


async def _wait_all_started(log: StartLog, deadline: float) -> None:
    """Wait until every run started or the wall clock passes ``deadline``; the rest are missed."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(deadline - time.time()):
            await log.wait_all_async()


@dataclass(frozen=True)
class ApschedulerConfig:
    """How APScheduler is set up for the measurement; the defaults are its best setup for the
    spread load, :func:`best_apscheduler_config` picks the best one for each load.

    ``scheduler="background"`` is a ``BackgroundScheduler`` whose default executor is a
    ``ThreadPoolExecutor(workers)`` running a plain function; ``scheduler="asyncio"`` is an
    ``AsyncIOScheduler`` on a fresh loop whose default ``AsyncIOExecutor`` runs a coroutine
    function on the loop itself (``workers`` must then be ``None``). ``journal_mode`` is the
    SQLite journal of the job store file; ``synchronous`` stays ``FULL`` in both, so every
    commit is on disk before it returns, as it is with APScheduler's defaults.
    """

    scheduler: Literal["background", "asyncio"] = "background"
    workers: int | None = 10
    journal_mode: Literal["wal", "delete"] = "wal"

    def __post_init__(self) -> None:
        if self.scheduler not in ("background", "asyncio"):
            raise ValueError(
                f"scheduler: must be 'background' or 'asyncio', got {self.scheduler!r}"
            )
        if self.journal_mode not in ("wal", "delete"):
            raise ValueError(f"journal_mode: must be 'wal' or 'delete', got {self.journal_mode!r}")
        if self.scheduler == "asyncio" and self.workers is not None:
            raise ValueError("workers: must be None for the asyncio scheduler (no thread pool)")
        if self.scheduler == "background" and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise ValueError(f"workers: must be an integer >= 1, got {self.workers!r}")

    @property
    def label(self) -> str:
        """A short description for tables and docs."""
        pool = f"threads={self.workers}" if self.scheduler == "background" else "coroutine jobs"
        return f"{self.scheduler}, {pool}, journal={self.journal_mode}"


def best_apscheduler_config(scenario: Scenario) -> ApschedulerConfig:
    """APScheduler's best measured setup for the load (docs/bench-trigger.md compares them).

    On a burst, ``AsyncIOScheduler`` with coroutine jobs gets through the runs fastest and has
    the lowest p99 and max: all the store work is one pass either way, and it adds no thread
    hand-off. On a spread (even or per-second), ``BackgroundScheduler`` with its default 10
    threads has the lowest p99 (or as low, and a far lower p50): runs start while the
    scheduler thread is still deleting rows. Both on WAL.
    """
    if scenario.kind == "burst":
        return ApschedulerConfig(scheduler="asyncio", workers=None)
    return ApschedulerConfig()


# The log the running APScheduler measurement records into. APScheduler stores a job's function
# as a textual reference ("module:name"), so the job must be a module-level function and reach
# its log through a module global.
_active_log: StartLog | None = None


def _apscheduler_job(index: int) -> None:
    """The no-op job of the ``background`` setup: record the start, nothing else."""
    if _active_log is None:
        raise RuntimeError("_active_log: APScheduler ran a job outside a measurement")
    _active_log.record(index)


async def _apscheduler_coroutine_job(index: int) -> None:
    """The no-op job of the ``asyncio`` setup: record the start, nothing else."""
    _apscheduler_job(index)


def measure_apscheduler(
    scenario: Scenario,
    *,
    tmp_dir: Path,
    config: ApschedulerConfig | None = None,
) -> LatencyStats:
    """APScheduler 3.11 with ``SQLAlchemyJobStore(url="sqlite:///<tmp_dir>/jobs.sqlite")``.

    ``config`` defaults to :func:`best_apscheduler_config` for the scenario.

    One ``date`` job per run, with ``misfire_grace_time=None`` (run however late, so none is
    dropped); jobs are added while the scheduler is paused and it is resumed before the first
    instant, so adding (``setup_s``) never counts as lateness. If adding overruns the first
    instant the attempt is discarded and retried with a later one. Runs APScheduler reports as
    missed, and runs not started within two minutes of the last instant, count as ``missed``.
    The measurement ends when every run has started *and* every job row has been deleted.
    Synchronous: the ``asyncio`` setup runs its own event loop.

    :raises RuntimeError: if adding the jobs overran the first instant four times.
    """
    config = config or best_apscheduler_config(scenario)
    per_job_s = _time_adding(config, _fresh_dir(tmp_dir, "calibration"), jobs=min(scenario.n, 500))
    # Adding costs about the same per job at 500 as at 10,000 jobs (one commit each), but other
    # processes' disk and CPU use make it vary: leave 50% slack.
    add_budget_s = scenario.n * per_job_s * 1.5
    for attempt in range(4):
        outcome = _run_apscheduler(
            scenario, _fresh_dir(tmp_dir, f"attempt{attempt}"), config, add_budget_s
        )
        if isinstance(outcome, LatencyStats):
            return outcome
        # Overran: the failed attempt's own add time is the best estimate for the next one.
        add_budget_s = max(2 * add_budget_s, 1.5 * outcome)
    raise RuntimeError(
        f"apscheduler: adding {scenario.n} jobs overran the first instant four times"
    )


def _fresh_dir(parent: Path, prefix: str) -> Path:
    """A new empty directory under ``parent``.

    A job store left by an earlier call must never be reused: its jobs would run (or clash with
    ours) during this measurement.
    """
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=parent))


def _sqlite_job_store(path: Path, journal_mode: str) -> Any:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from sqlalchemy import event

    store = SQLAlchemyJobStore(url=f"sqlite:///{path}")

    @event.listens_for(store.engine, "connect")
    def _pin_durability(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # Pinned rather than left to the SQLite build's defaults, so the durability claimed in
        # the docs holds on any machine: every commit is synced before it returns.
        dbapi_connection.execute(f"PRAGMA journal_mode={journal_mode}")
        dbapi_connection.execute("PRAGMA synchronous=FULL")

    return store


def _make_scheduler(config: ApschedulerConfig, store_path: Path) -> Any:
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.schedulers.background import BackgroundScheduler

    options: dict[str, Any] = {
        "jobstores": {"default": _sqlite_job_store(store_path, config.journal_mode)},
        "job_defaults": {"misfire_grace_time": None},
        "timezone": UTC,
    }
    if config.scheduler == "asyncio":
        return AsyncIOScheduler(**options)
    return BackgroundScheduler(executors={"default": ThreadPoolExecutor(config.workers)}, **options)


def _job_function(config: ApschedulerConfig) -> Callable[[int], object]:
    return _apscheduler_coroutine_job if config.scheduler == "asyncio" else _apscheduler_job


def _time_adding(config: ApschedulerConfig, directory: Path, *, jobs: int) -> float:
    """Seconds per ``add_job`` into a fresh store, to pick how far ahead to put the first run."""

    def add() -> float:
        scheduler = _make_scheduler(config, directory / "jobs.sqlite")
        scheduler.start(paused=True)
        far_future = datetime.fromtimestamp(time.time() + 86_400, UTC)
        started = time.perf_counter()
        for index in range(jobs):
            scheduler.add_job(
                _job_function(config), "date", run_date=far_future, args=(index,), id=str(index)
            )
        elapsed = time.perf_counter() - started
        scheduler.shutdown(wait=False)
        return elapsed / jobs

    if config.scheduler == "asyncio":

        async def in_loop() -> float:
            per_job_s = add()
            await asyncio.sleep(0)  # AsyncIOScheduler.shutdown runs as a loop callback
            return per_job_s

        return asyncio.run(in_loop())
    return add()


class _Run:
    """One attempt's bookkeeping, fed by APScheduler's event listeners (from its threads)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.log = StartLog(scenario.n)
        self.instants: list[float] = []
        self.setup_s = 0.0
        self._n = scenario.n
        # list.append is atomic, so listeners on any thread can count by appending.
        self._missed: list[object] = []
        self._removed: list[object] = []
        self._all_removed = threading.Event()

    def on_missed(self, event: object) -> None:
        self._missed.append(event)

    def on_removed(self, event: object) -> None:
        self._removed.append(event)
        if len(self._removed) >= self._n:
            self._all_removed.set()

    def wait_all_removed(self, timeout: float) -> bool:
        """Wait until the scheduler has deleted every job row (its durable record of a run)."""
        return self._all_removed.wait(max(0.0, timeout))

    def stats(self) -> LatencyStats:
        pairs = self.log.pairs(self.instants)
        not_started = self._n - len(pairs)
        # A missed run never starts, so it is already among the runs not started; the event
        # count is a cross-check that nothing else went wrong.
        if len(self._missed) > not_started:
            raise RuntimeError(
                f"apscheduler: {len(self._missed)} missed events but only {not_started} runs "
                "did not start"
            )
        return LatencyStats.from_pairs(pairs, missed=not_started, setup_s=self.setup_s)


def _run_apscheduler(
    scenario: Scenario, directory: Path, config: ApschedulerConfig, add_budget_s: float
) -> LatencyStats | float:
    """One measured run, or the seconds adding took if it did not finish in time."""
    if config.scheduler == "asyncio":

        async def in_loop() -> LatencyStats | float:
            return await _run_apscheduler_async(scenario, directory, config, add_budget_s)

        return asyncio.run(in_loop())
    scheduler = _make_scheduler(config, directory / "jobs.sqlite")
    run = _Run(scenario)
    try:
        if not _prepare(scheduler, run, config, add_budget_s):
            return run.setup_s
        deadline = run.instants[-1] + _FINISH_GRACE_S
        run.log.wait_all(deadline - time.time())
        # Shutting down in the middle of a pass makes APScheduler 3 fail the pass's remaining
        # deletions (JobLookupError on its thread), so let it finish them first.
        run.wait_all_removed(deadline - time.time())
        return run.stats()
    finally:
        scheduler.shutdown(wait=True)
        _end_measurement()


async def _run_apscheduler_async(
    scenario: Scenario, directory: Path, config: ApschedulerConfig, add_budget_s: float
) -> LatencyStats | float:
    scheduler = _make_scheduler(config, directory / "jobs.sqlite")
    run = _Run(scenario)
    try:
        if not _prepare(scheduler, run, config, add_budget_s):
            return run.setup_s
        # Jobs run as tasks on this loop after the pass that deleted their rows, so once all
        # have started all rows are gone.
        await _wait_all_started(run.log, run.instants[-1] + _FINISH_GRACE_S)
        return run.stats()
    finally:
        # AsyncIOScheduler.shutdown only queues the shutdown on the loop; let it run.
        scheduler.shutdown(wait=True)
        await asyncio.sleep(0)
        _end_measurement()


def _prepare(scheduler: Any, run: _Run, config: ApschedulerConfig, add_budget_s: float) -> bool:
    """Add the jobs to a paused scheduler and resume it before the first instant.

    Fills ``run.setup_s`` and ``run.instants``. Returns False, with the scheduler still paused
    and its store emptied, if adding did not finish early enough.
    """
    from apscheduler.events import EVENT_JOB_MISSED, EVENT_JOB_REMOVED

    global _active_log
    _active_log = run.log
    scheduler.add_listener(run.on_missed, EVENT_JOB_MISSED)
    scheduler.add_listener(run.on_removed, EVENT_JOB_REMOVED)
    scheduler.start(paused=True)
    scenario = run.scenario
    setup_started = time.perf_counter()
    t0 = time.time() + add_budget_s + scenario.lead_s
    run_dates = [datetime.fromtimestamp(at, UTC) for at in scenario.instants(t0)]
    function = _job_function(config)
    for index, run_date in enumerate(run_dates):
        scheduler.add_job(function, "date", run_date=run_date, args=(index,), id=str(index))
    run.setup_s = time.perf_counter() - setup_started
    # The scheduler must be waiting for the first instant before it comes, with at least half
    # the quiet lead left, or its lateness would include our adding.
    if time.time() > t0 - scenario.lead_s / 2:
        # Empty the store first: APScheduler 3 runs one more pass after shutdown and would
        # submit the now-due jobs to its stopped executor.
        scheduler.remove_all_jobs()
        return False
    # The instants as APScheduler holds them (whole microseconds), which is what it aims for.
    run.instants = [run_date.timestamp() for run_date in run_dates]
    scheduler.resume()
    return True


def _end_measurement() -> None:
    global _active_log
    _active_log = None


BASELINES: dict[str, Measure] = {
    "call_at": measure_call_at,
    "call_at_uvloop": measure_call_at_uvloop,
    "apscheduler": measure_apscheduler,
}
"""The baseline measurements by row name."""


def measure_subjects(
    scenario: Scenario,
    subjects: Mapping[str, Measure],
    *,
    repeats: int,
    tmp_dir: Path | None = None,
) -> dict[str, list[LatencyStats]]:
    """Measure every subject ``repeats`` times on ``scenario``, interleaved.

    Repeats alternate between the subjects (a, b, c, a, b, c, ...) so a slow spell of the
    machine lands on every row alike. Each measurement gets a fresh empty directory under
    ``tmp_dir`` (a temporary directory, removed afterwards, if None). The cronloop suite passes
    ``{**BASELINES, "cronloop": measure_cronloop}``.

    :raises ValueError: if ``repeats`` < 1 or ``subjects`` is empty.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats: must be an integer >= 1, got {repeats!r}")
    if not subjects:
        raise ValueError("subjects: empty, there is nothing to measure")
    if tmp_dir is None:
        with tempfile.TemporaryDirectory(prefix="bench-trigger-") as directory:
            return measure_subjects(scenario, subjects, repeats=repeats, tmp_dir=Path(directory))
    results: dict[str, list[LatencyStats]] = {name: [] for name in subjects}
    for _ in range(repeats):
        for name, measure in subjects.items():
            # Garbage from the previous measurement must not be collected during this one.
            gc.collect()
            run_dir = _fresh_dir(tmp_dir, f"{scenario.kind}-{name}")
            results[name].append(measure(scenario, tmp_dir=run_dir))
    return results


def measure_baselines(
    scenario: Scenario, *, repeats: int, tmp_dir: Path | None = None
) -> dict[str, list[LatencyStats]]:
    """:func:`measure_subjects` with the two baselines: ``{"call_at": [...], "apscheduler":
    [...]}``, ``repeats`` runs each, interleaved."""
    return measure_subjects(scenario, BASELINES, repeats=repeats, tmp_dir=tmp_dir)


def _table(results: dict[Scenario, dict[str, list[LatencyStats]]]) -> Table:
    table = Table(title="trigger baselines (median of repeats; ranges are min-max over repeats)")
    for column in (
        "scenario",
        "baseline",
        "repeats",
        "started",
        "missed",
        "p50 ms",
        "p99 ms",
        "p99 range",
        "max ms",
        "runs/s",
        "runs/s range",
        "setup s",
    ):
        table.add_column(column, justify="left" if column in ("scenario", "baseline") else "right")
    for scenario, rows in results.items():
        for name, runs in rows.items():
            median = median_stats(runs)
            table.add_row(
                scenario.name,
                name,
                str(len(runs)),
                f"{median.count:,}",
                f"{median.missed:,}",
                f"{median.p50_ms:,.2f}",
                f"{median.p99_ms:,.2f}",
                f"{min(r.p99_ms for r in runs):,.1f}-{max(r.p99_ms for r in runs):,.1f}",
                f"{median.max_ms:,.2f}",
                f"{median.runs_per_s:,.0f}",
                f"{min(r.runs_per_s for r in runs):,.0f}-{max(r.runs_per_s for r in runs):,.0f}",
                f"{median.setup_s:,.2f}",
            )
    return table


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.trigger_baselines [--quick] [--repeats N] [--apscheduler-* ...]``.

    Measures both baselines on both standard scenarios and prints the medians. APScheduler runs
    in its best setup for each load (:func:`best_apscheduler_config`) unless an
    ``--apscheduler-*`` option asks for another one, used for both loads (how the docs'
    comparison of setups was made).
    """
    parser = argparse.ArgumentParser(prog="python -m bench.trigger_baselines")
    parser.add_argument("--quick", action="store_true", help="1,000 runs, 1 s spread, 2 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="override the repeat count")
    parser.add_argument("--apscheduler-scheduler", choices=["background", "asyncio"])
    parser.add_argument(
        "--apscheduler-workers", type=int, help="thread pool size of the background scheduler"
    )
    parser.add_argument("--apscheduler-journal", choices=["wal", "delete"])
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    override: ApschedulerConfig | None = None
    if args.apscheduler_scheduler or args.apscheduler_workers or args.apscheduler_journal:
        default = ApschedulerConfig()
        background = (args.apscheduler_scheduler or default.scheduler) == "background"
        try:
            override = ApschedulerConfig(
                scheduler=args.apscheduler_scheduler or default.scheduler,
                workers=(args.apscheduler_workers or default.workers) if background else None,
                journal_mode=args.apscheduler_journal or default.journal_mode,
            )
        except ValueError as error:
            parser.error(str(error))
    console = Console()
    console.width = max(console.width, 160)  # the table is unreadable when folded
    results: dict[Scenario, dict[str, list[LatencyStats]]] = {}
    for scenario in standard_scenarios(args.quick):
        config = override or best_apscheduler_config(scenario)
        subjects: dict[str, Measure] = {
            "call_at": measure_call_at,
            "call_at_uvloop": measure_call_at_uvloop,
            "apscheduler": functools.partial(measure_apscheduler, config=config),
        }
        started = time.perf_counter()
        results[scenario] = measure_subjects(scenario, subjects, repeats=repeats)
        elapsed = time.perf_counter() - started
        console.print(
            f"measured {scenario.name} x {repeats} in {elapsed:.0f} s (apscheduler: {config.label})"
        )
    console.print(_table(results))


if __name__ == "__main__":
    main()

"""Benchmark suite ``scale_cronjobs``: the scheduler with 100,000 CronJobs loaded.

The issue asks for start-up time, resident memory and idle CPU with 100k CronJobs stored. The
store is populated once per run (10,000 in quick mode) with a seeded, varied mix of schedules
(every 5 minutes in office hours, hourly at a random minute, daily and weekly at random times
in several zones, ``@every 1h``), each resampled until it does not fall due during the
benchmark, so the process measured is idle and nothing but reconciling is timed.

Each subject then runs in a fresh subprocess, so the memory and CPU measured are its alone:

- ``cronloop``: store + InlineRuntime + ProcessRuntime + Manager with Prometheus metrics,
  composed as ``cronloop up`` composes them, without the HTTP API and the spec-dir watcher.
  Start-up ends when every CronJob was reconciled once and waits on its timer: the CronJob
  controller's queue holds no ready or in-flight key and all N keys are delayed.
- ``floor`` (baseline): the least any scheduler on this store must do: list the N CronJobs,
  parse each into the typed model and compute its next time with ``Schedule.next_after``,
  then keep a heap of (next time, name) and the store open (its poller running) while idle.
- ``apscheduler`` (baseline): APScheduler 3.11 ``BackgroundScheduler`` with its SQLAlchemy
  SQLite job store holding N equivalent jobs (same expressions, zones and interval anchors).
  Start-up ends when its thread has computed its first wake-up (the first
  ``get_next_run_time`` after ``start()``).

Start-up is measured from just before the subprocess is spawned, so it includes the
interpreter and the imports. Idle CPU is CPU seconds (user + system, every thread) per wall
second over a window right after start-up. Run ``python -m bench.scale_cronjobs profile N``
for a pyinstrument profile of cronloop's start-up.

Hand-written rather than with a benchmark library because each sample is a whole process
whose readiness only the subject itself can tell.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.harness import Comparison, Measurement

__all__ = ["ScheduleChoice", "choose_schedules", "measure", "run"]

_ROOT = Path(__file__).resolve().parent.parent
_ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: No schedule may fall due within this long after populating: the whole suite runs in it.
_QUIET_WINDOW = timedelta(minutes=30)
_BATCH = 1_000
#: APScheduler's store is filled one committed ``add_job`` at a time; its full-size subject is
#: shrunk (and the notes say so) when filling it would take longer than this.
_APS_POPULATE_BUDGET = 180.0
_APS_FUNC = "os:getpid"
_FIRST_PASS_LIMIT = 900.0


@dataclass(frozen=True, slots=True)
class ScheduleChoice:
    """One CronJob's schedule: the expression and its IANA zone."""

    expression: str
    time_zone: str


#: The mix of schedule kinds, with their shares; each kind is resampled within itself until it
#: is quiet during the benchmark, so the shares hold whatever the time of day.
_KINDS = (("office-hours */5", 0.30), ("hourly", 0.30), ("daily", 0.25), ("@every 1h", 0.10))


def _candidate(rng: random.Random, kind: str) -> ScheduleChoice:
    zone = rng.choice(_ZONES)
    if kind == "office-hours */5":
        start = rng.randrange(0, 16)
        return ScheduleChoice(f"*/5 {start}-{start + rng.randrange(4, 9)} * * mon-fri", zone)
    if kind == "hourly":
        return ScheduleChoice(f"{rng.randrange(60)} * * * *", "UTC")
    if kind == "daily":
        return ScheduleChoice(f"{rng.randrange(60)} {rng.randrange(24)} * * *", zone)
    if kind == "@every 1h":
        return ScheduleChoice("@every 1h", "UTC")
    day = rng.choice(_DAYS)
    return ScheduleChoice(f"{rng.randrange(60)} {rng.randrange(24)} * * {day}", zone)


def _kind(rng: random.Random) -> str:
    roll = rng.random()
    for kind, share in _KINDS:
        if roll < share:
            return kind
        roll -= share
    return "weekly"


def choose_schedules(n: int, *, seed: int, quiet_from: datetime) -> list[ScheduleChoice]:
    """``n`` varied schedules, none due in ``(quiet_from, quiet_from + 30 min]``.

    ``@every`` intervals are anchored at their CronJob's creation, which is after
    ``quiet_from``, so ``@every 1h`` never falls in the window.
    """
    from cronloop.api import Schedule

    rng = random.Random(seed)
    quiet_to = quiet_from + _QUIET_WINDOW
    parsed: dict[ScheduleChoice, bool] = {}
    chosen: list[ScheduleChoice] = []
    while len(chosen) < n:
        kind = _kind(rng)
        while True:
            choice = _candidate(rng, kind)
            ok = parsed.get(choice)
            if ok is None:
                schedule = Schedule.parse(choice.expression, choice.time_zone, anchor=quiet_from)
                following = schedule.next_after(quiet_from)
                ok = choice.expression.startswith("@every") or (
                    following is not None and following > quiet_to
                )
                parsed[choice] = ok
            if ok:
                chosen.append(choice)
                break
    return chosen


def _slices(n: int, count: int) -> list[range]:
    """``n`` split in ``count`` slices: each slice's rate is one sample of a populate rate."""
    size = -(-n // count)
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


# ---- populating ----------------------------------------------------------------------------


def _cronjob(index: int, choice: ScheduleChoice) -> Any:
    """CronJob ``cj-<index>``: a process step and a team label, like a real fleet's."""
    from cronloop.api import CronJob, JobSpec, ObjectMeta
    from cronloop.api.cronjob import CronJobSpec

    name = f"cj-{index:06d}"
    step = {"runtime": "process", "argv": ["/bin/sh", "-c", f"echo {name}"], "timeoutSeconds": 300}
    return CronJob(
        metadata=ObjectMeta(name=name, labels={"team": f"team-{index % 50}"}),
        spec=CronJobSpec(
            schedule=choice.expression,
            time_zone=choice.time_zone,
            job_template=JobSpec.model_validate({"main": step}),
        ),
    )


async def _populate_cronloop(
    db: Path, choices: Sequence[ScheduleChoice], samples: int
) -> tuple[list[float], list[datetime]]:
    """Create the CronJobs in batches; returns the rate of each slice and each created_at."""
    from cronloop.controllers import to_stored
    from cronloop.store import open_store

    rates: list[float] = []
    created: list[datetime] = []
    async with await open_store(db) as store:
        for part in _slices(len(choices), samples):
            started = time.perf_counter()
            for at in range(part.start, part.stop, _BATCH):
                batch = [
                    to_stored(_cronjob(i, choices[i]))
                    for i in range(at, min(part.stop, at + _BATCH))
                ]
                stored = await store.create_many(batch)
                created.extend(obj.created_at for obj in stored if obj.created_at is not None)
            rates.append(len(part) / (time.perf_counter() - started))
    if len(created) != len(choices):
        raise RuntimeError("the store returned CronJobs without created_at")
    return rates, created


def _aps_trigger(choice: ScheduleChoice, created: datetime) -> Any:
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if choice.expression.startswith("@every"):
        # cronloop anchors intervals at the CronJob's creation: the same instants here.
        return IntervalTrigger(hours=1, start_date=created, timezone=UTC)
    return CronTrigger.from_crontab(choice.expression, timezone=choice.time_zone)


def _aps_url(db: Path) -> str:
    return f"sqlite:///{db}"


def _populate_apscheduler(
    db: Path,
    choices: Sequence[ScheduleChoice],
    created: Sequence[datetime],
    budget: float,
    samples: int,
) -> tuple[list[float], int]:
    """Add jobs through ``add_job`` (APScheduler has no batch add) until done or over budget.

    Returns the rate of each complete slice and how many jobs were stored. Once the first
    slice shows the whole would exceed ``budget`` seconds, filling stops at the largest
    number of whole slices that fits.
    """
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=_aps_url(db))}, timezone=UTC
    )
    scheduler.start(paused=True)
    rates: list[float] = []
    stored = 0
    spent = 0.0
    try:
        parts = _slices(len(choices), samples)
        for index, part in enumerate(parts):
            if index == 1 and spent * len(parts) > budget:
                # Keep a multiple of the slice size that fits the budget (at least 2 slices,
                # so there are samples to take a median of).
                keep = max(2, int(budget / spent))
                parts = parts[:keep]
            if index >= len(parts):
                break
            started = time.perf_counter()
            for i in part:
                scheduler.add_job(
                    _APS_FUNC,
                    _aps_trigger(choices[i], created[i]),
                    id=f"cj-{i:06d}",
                    name=f"cj-{i:06d}",
                    misfire_grace_time=60,
                    coalesce=True,
                )
            took = time.perf_counter() - started
            spent += took
            rates.append(len(part) / took)
            stored += len(part)
    finally:
        scheduler.shutdown(wait=False)
    return rates, stored


def _check_equivalent(
    choices: Sequence[ScheduleChoice], created: Sequence[datetime], at: datetime
) -> None:
    """Both schedulers must agree on the next times, or the comparison is meaningless."""
    from cronloop.api import Schedule

    rng = random.Random(7)
    for i in rng.sample(range(len(choices)), min(300, len(choices))):
        choice = choices[i]
        ours = Schedule.parse(choice.expression, choice.time_zone, anchor=created[i])
        theirs = _aps_trigger(choice, created[i])
        mine = ours.next_after(at)
        other = theirs.get_next_fire_time(None, at)
        while other is not None and other <= at:
            other = theirs.get_next_fire_time(other, other + timedelta(seconds=1))
        if other is None or mine != other.astimezone(UTC):
            raise RuntimeError(
                f"next time of {choice} differs: cronloop {mine}, APScheduler {other}"
            )


# ---- subprocess subjects -------------------------------------------------------------------


def _rss() -> int:
    """Resident memory of this process and its children (cronloop's writer process)."""
    import psutil

    me = psutil.Process()
    return int(me.memory_info().rss) + sum(
        int(child.memory_info().rss) for child in me.children(recursive=True)
    )


def _cpu() -> float:
    import psutil

    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


async def _idle(seconds: float) -> tuple[float, float]:
    """CPU seconds per wall second over ``seconds`` of this loop idling, and the wall time."""
    cpu, wall = _cpu(), time.perf_counter()
    await asyncio.sleep(seconds)
    wall = time.perf_counter() - wall
    return (_cpu() - cpu) / wall, wall


async def _child_cronloop(
    db: Path, n: int, idle: float, settle: float, emit: Callable[[dict[str, Any]], None]
) -> None:
    from prometheus_client import CollectorRegistry

    from cronloop.controllers import Manager
    from cronloop.runtimes import InlineRuntime, ProcessRuntime, Runtime
    from cronloop.store import open_store
    from cronloop.sync import PrometheusMetricsProvider

    marks = {"imported": time.time()}
    # As ``cronloop up`` runs it: the writer in its own process, the collector settled.
    store = await open_store(db, writer="process")
    marks["store_open"] = time.time()
    runtimes: dict[str, Runtime] = {"inline": InlineRuntime(), "process": ProcessRuntime()}
    manager = Manager(
        store,
        runtimes,
        log_dir=db.parent / "logs",
        metrics=PrometheusMetricsProvider(registry=CollectorRegistry()),
        tune_gc=True,
    )
    # The Manager has no public accessor for its controllers' statistics; the CronJob
    # controller's counters and queue are the only honest witness of start-up.
    controller = manager._cronjob_loop
    task = asyncio.create_task(manager.run())
    await manager.wait_ready()
    marks["listed"] = time.time()
    # Wait as long as the first pass takes (bounded), then up to ``settle`` more seconds
    # for the queue to hold only delayed keys; the idle window follows either way.
    deadline = time.monotonic() + _FIRST_PASS_LIMIT
    report = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        stats = controller.statistics()
        queue = stats.queue
        done = stats.succeeded + stats.requeued_after + stats.errors
        # The first listing enqueues every name in order and the queue is FIFO; a resync
        # can only re-add keys behind the ones still waiting, so the n-th reconcile ends
        # the first pass: every CronJob was reconciled once and set its timer.
        if done >= n and "reconciled" not in marks:
            marks["reconciled"] = time.time()
            deadline = min(deadline, time.monotonic() + settle)
        if queue.queued == 0 and queue.processing == 0 and queue.delayed >= n:
            marks["quiescent"] = time.time()
            break
        if task.done():
            task.result()
            raise RuntimeError("the manager stopped before start-up completed")
        if time.monotonic() >= report:
            report += 10.0
            print(
                f"cronloop: {done:,} reconciles, queued {queue.queued:,}, delayed "
                f"{queue.delayed:,}, resyncs {manager.statistics().resyncs}",
                file=sys.stderr,
                flush=True,
            )
        await asyncio.sleep(0.02)
    if "reconciled" not in marks:
        raise RuntimeError(f"cronloop did not reconcile {n} CronJobs in {_FIRST_PASS_LIMIT} s")
    rss = _rss()
    resyncs = manager.statistics().resyncs
    before = controller.statistics()
    cpu_per_s, wall = await _idle(idle)
    stats = controller.statistics()
    jobs = len((await store.list("Job", limit=1)).items)
    # Not manager.stop(): it drains the queued keys, which at 100k takes minutes. The
    # result is out, the database is a throw-away copy: the process just ends.
    emit(
        {
            "marks": marks,
            "rss": rss,
            "idle_cpu": cpu_per_s,
            "idle_wall": wall,
            "resyncs_in_idle": manager.statistics().resyncs - resyncs,
            "reconciles_in_idle": (stats.succeeded + stats.requeued_after)
            - (before.succeeded + before.requeued_after),
            "reconciles": stats.succeeded + stats.requeued_after,
            "errors": stats.errors,
            "jobs": jobs,
        }
    )


async def _child_floor(db: Path, n: int, idle: float) -> dict[str, Any]:
    import heapq

    from cronloop.api import CronJob
    from cronloop.controllers import typed
    from cronloop.store import open_store

    marks = {"imported": time.time()}
    async with await open_store(db) as store:
        marks["store_open"] = time.time()
        listed = await store.list("CronJob")
        marks["listed"] = time.time()
        now = datetime.now(UTC)
        heap: list[tuple[datetime, str]] = []
        for obj in listed.items:
            cronjob = typed(obj, CronJob)
            anchor = cronjob.metadata.creation_timestamp or now
            schedule = cronjob.spec.parsed_schedule(anchor=anchor)
            following = schedule.next_after(now)
            if following is not None:
                heap.append((following, cronjob.metadata.name))
        heapq.heapify(heap)
        del listed
        if len(heap) != n:
            raise RuntimeError(f"listed {len(heap)} CronJobs, expected {n}")
        marks["reconciled"] = time.time()
        rss = _rss()
        cpu_per_s, wall = await _idle(idle)
        return {"marks": marks, "rss": rss, "idle_cpu": cpu_per_s, "idle_wall": wall}


def _child_apscheduler(db: Path, n: int, idle: float) -> dict[str, Any]:
    import threading

    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    marks = {"imported": time.time()}
    first_wait = threading.Event()

    class _Witness(SQLAlchemyJobStore):  # type: ignore[misc]
        """The store, noting when the scheduler's loop first asked for its next wake-up."""

        def get_next_run_time(self) -> Any:
            result = super().get_next_run_time()
            first_wait.set()
            return result

    store = _Witness(url=_aps_url(db))
    scheduler = BackgroundScheduler(jobstores={"default": store}, timezone=UTC)
    scheduler.start()
    marks["listed"] = time.time()
    if not first_wait.wait(timeout=600):
        raise RuntimeError("APScheduler never computed its first wake-up")
    marks["reconciled"] = time.time()
    rss = _rss()
    with store.engine.connect() as conn:
        from sqlalchemy import func, select

        stored = conn.execute(select(func.count()).select_from(store.jobs_t)).scalar_one()
    if stored != n:
        raise RuntimeError(f"APScheduler store holds {stored} jobs, expected {n}")
    cpu, wall = _cpu(), time.perf_counter()
    time.sleep(idle)  # the scheduler's own thread is what is measured meanwhile
    wall = time.perf_counter() - wall
    cpu_per_s = (_cpu() - cpu) / wall
    scheduler.shutdown(wait=False)
    return {"marks": marks, "rss": rss, "idle_cpu": cpu_per_s, "idle_wall": wall}


def _child_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_cronjobs")
    parser.add_argument("subject", choices=("cronloop", "floor", "apscheduler"))
    parser.add_argument("db", type=Path)
    parser.add_argument("n", type=int)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args(argv)
    profiler: Any = None
    if args.profile is not None:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="enabled", interval=0.001)
        profiler.start()

    def emit(result: dict[str, Any]) -> None:
        if profiler is not None:
            profiler.stop()
            # pyinstrument samples the main thread: store reads on the reader threads show
            # up as the loop waiting (epoll), so the report also gives the CPU time.
            session = profiler.last_session
            parts = [
                f"wall {session.duration:.1f} s, process CPU {session.cpu_time:.1f} s",
                profiler.output_text(show_all=False),
                "flat, self time:",
                profiler.output_text(flat=True, flat_time="self"),
                "flat, total time:",
                profiler.output_text(flat=True, flat_time="total"),
            ]
            args.profile.write_text("\n".join(parts))
        print(json.dumps(result), flush=True)
        sys.stderr.flush()
        os._exit(0)

    if args.subject == "cronloop":
        from cronloop.cli.eventloop import loop_factory

        with asyncio.Runner(loop_factory=loop_factory()) as runner:  # uvloop, as in `up`
            runner.run(_child_cronloop(args.db, args.n, args.idle, args.settle, emit))
        raise RuntimeError("the cronloop subject returned without a result")
    if args.subject == "floor":
        emit(asyncio.run(_child_floor(args.db, args.n, args.idle)))
    emit(_child_apscheduler(args.db, args.n, args.idle))


@dataclass(frozen=True, slots=True)
class _Sample:
    startup: float
    rss_mib: float
    idle_cpu: float
    raw: dict[str, Any]


def _spawn(subject: str, db: Path, n: int, idle: float, profile: Path | None = None) -> _Sample:
    argv = [sys.executable, "-m", "bench.scale_cronjobs", subject, str(db), str(n)]
    argv += ["--idle", str(idle)]
    if profile is not None:
        argv += ["--profile", str(profile)]
    env = {**os.environ, "PYTHONPATH": f"{_ROOT}{os.pathsep}{_ROOT / 'src'}"}
    spawned = time.time()
    # stderr is inherited: progress lines and any traceback show up as they happen.
    done = subprocess.run(
        argv, cwd=_ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{subject} subprocess exited with {done.returncode} (stderr above)")
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    raw["spawned"] = spawned
    if raw.get("errors") or raw.get("jobs"):
        raise RuntimeError(f"{subject}: not idle (reconcile errors or Jobs created): {raw}")
    return _Sample(
        startup=raw["marks"]["reconciled"] - spawned,
        rss_mib=raw["rss"] / 2**20,
        idle_cpu=raw["idle_cpu"],
        raw=raw,
    )


# ---- the suite -----------------------------------------------------------------------------


def _phase(samples: Sequence[_Sample], mark: str, since: str | None) -> str:
    values = [
        s.raw["marks"][mark] - (s.raw["marks"][since] if since else s.raw["spawned"])
        for s in samples
        if mark in s.raw["marks"]
    ]
    return f"{statistics.median(values):.2f} s" if values else "-"


def _median_of(samples: Sequence[_Sample], key: str) -> str:
    return f"{statistics.median(s.raw[key] for s in samples):,.0f}"


def _copy_db(src: Path, dst: Path) -> Path:
    """A fresh copy of a SQLite database (its WAL checkpointed first), so runs do not share."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(src)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def _measure(
    runs: int, make: Callable[[int], _Sample], label: str, log: Callable[[str], None]
) -> list[_Sample]:
    samples = []
    for i in range(runs):
        sample = make(i)
        log(
            f"  {label} run {i + 1}/{runs}: start-up {sample.startup:.2f} s, "
            f"RSS {sample.rss_mib:.0f} MiB, idle CPU {sample.idle_cpu:.4f} s/s"
        )
        samples.append(sample)
    return samples


def run(quick: bool) -> list[Comparison]:
    """Populate, then start each subject 3 times (5 in quick mode) in fresh subprocesses."""
    if quick:
        return measure(10_000, runs=5, idle=10.0, aps_budget=float("inf"))
    return measure(100_000, runs=3, idle=10.0, aps_budget=_APS_POPULATE_BUDGET)


def measure(n: int, *, runs: int, idle: float, aps_budget: float) -> list[Comparison]:
    """The suite at size ``n``: ``runs`` subprocesses per subject, ``idle`` s CPU windows.

    APScheduler's store is filled for at most about ``aps_budget`` seconds (see the notes of
    the rows for the size it ran at).
    """

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="cronloop-scale-") as tmp:
        root = Path(tmp)
        quiet_from = datetime.now(UTC)
        choices = choose_schedules(n, seed=100_000, quiet_from=quiet_from)
        master = root / "cronloop.db"
        log(f"populating cronloop with {n:,} CronJobs ...")
        # One populate per run (it is the expensive part): its ``runs`` slices are the samples.
        cl_rates, created = asyncio.run(_populate_cronloop(master, choices, runs))
        log(f"  {statistics.median(cl_rates):,.0f} CronJobs/s")
        _check_equivalent(choices, created, quiet_from + _QUIET_WINDOW)
        aps_db = root / "apscheduler.db"
        log(f"populating APScheduler with up to {n:,} jobs ...")
        aps_rates, aps_n = _populate_apscheduler(aps_db, choices, created, aps_budget, runs)
        log(f"  {statistics.median(aps_rates):,.0f} jobs/s, {aps_n:,} stored")

        def cronloop_run(i: int) -> _Sample:
            return _spawn("cronloop", _copy_db(master, root / f"cl-{i}" / "c.db"), n, idle)

        def floor_run(i: int) -> _Sample:
            return _spawn("floor", _copy_db(master, root / f"fl-{i}" / "c.db"), n, idle)

        def aps_run(i: int) -> _Sample:
            return _spawn("apscheduler", aps_db, aps_n, idle)

        ours = _measure(runs, cronloop_run, "cronloop", log)
        floor = _measure(runs, floor_run, "floor", log)
        aps = _measure(runs, aps_run, "apscheduler", log)
    return _rows(n, runs, ours, floor, aps, aps_n, cl_rates, aps_rates, aps_budget)


def _rows(
    n: int,
    runs: int,
    ours: Sequence[_Sample],
    floor: Sequence[_Sample],
    aps: Sequence[_Sample],
    aps_n: int,
    cl_rates: Sequence[float],
    aps_rates: Sequence[float],
    aps_budget: float,
) -> list[Comparison]:
    size = f"{n // 1000}k"
    aps_name = "APScheduler 3.11 SQLAlchemy store" + ("" if aps_n == n else f" ({aps_n:,} jobs)")
    shrunk = (
        ""
        if aps_n == n
        else (
            f" APScheduler ran with {aps_n:,} jobs, not {n:,}: filling its store one add_job "
            f"at a time would have taken over {aps_budget:.0f} s."
        )
    )
    quiet = sum("quiescent" in s.raw["marks"] for s in ours)
    extra_ours = {
        "imports": _phase(ours, "imported", None),
        "store open": _phase(ours, "store_open", "imported"),
        "first list enqueued": _phase(ours, "listed", "store_open"),
        "first pass reconciled": _phase(ours, "reconciled", "listed"),
        "quiet (only delayed keys) after the first pass": f"{quiet} of {len(ours)} runs",
        "resyncs in the idle windows": str(sum(s.raw["resyncs_in_idle"] for s in ours)),
        "reconciles in one idle window": _median_of(ours, "reconciles_in_idle"),
    }
    startup_notes = {
        "floor": (
            f"median of {runs} fresh subprocesses per subject, spawn to every CronJob "
            "reconciled once with its timer set (floor: listed, parsed, next time computed)."
        ),
        "APScheduler": (
            "APScheduler reads no job at start: its first wake-up is one indexed query for the "
            "earliest next_run_time, so its start-up does not grow with the job count." + shrunk
        ),
    }
    rss_notes = {
        "floor": (
            "the floor holds the whole listing and all typed models at once before keeping "
            "only a heap of (next time, name); CPython keeps the freed arenas, so its RSS is "
            "that peak: not a lower bound on memory."
        ),
        "APScheduler": "APScheduler keeps its jobs in SQLite, not in memory, while idle.",
    }
    idle_notes = {
        "floor": (
            ""
            if quiet == len(ours)
            else (
                f"cronloop was quiet after the first pass in {quiet} of {len(ours)} runs: the "
                "Manager's resync lists and enqueues every CronJob each 30 s, and one pass over "
                f"{n:,} takes longer than that, so the controller never goes idle."
            )
        ),
        "APScheduler": (
            "APScheduler's thread sleeps until the earliest next_run_time; 0 means no CPU tick "
            "(10 ms) in the window, so there is no ratio."
        ),
    }

    def m(subject: str, samples: Sequence[_Sample], key: Callable[[_Sample], float]) -> Measurement:
        return Measurement(subject, tuple(key(s) for s in samples))

    floor_name = "list+parse+next_after floor"
    bases = (("floor", floor_name, floor), ("APScheduler", aps_name, aps))
    rows: list[Comparison] = []
    for short, base_name, base in bases:
        rows.append(
            Comparison(
                name=f"start-up, {size} CronJobs vs {short}",
                metric="process start to every CronJob scheduled",
                unit="s",
                cronloop=m("cronloop", ours, lambda s: s.startup),
                baseline=m(base_name, base, lambda s: s.startup),
                higher_is_better=False,
                notes=startup_notes[short],
                extra=extra_ours if base is floor else {},
            )
        )
    for short, base_name, base in bases:
        rows.append(
            Comparison(
                name=f"RSS after start-up, {size} vs {short}",
                metric="resident memory",
                unit="MiB",
                cronloop=m("cronloop", ours, lambda s: s.rss_mib),
                baseline=m(base_name, base, lambda s: s.rss_mib),
                higher_is_better=False,
                notes=rss_notes[short],
            )
        )
    for short, base_name, base in bases:
        rows.append(
            Comparison(
                name=f"idle CPU, {size} vs {short}",
                metric="CPU per wall second, 10 s window after start-up",
                unit="ms/s",
                cronloop=m("cronloop", ours, lambda s: s.idle_cpu * 1000),
                baseline=m(base_name, base, lambda s: s.idle_cpu * 1000),
                higher_is_better=False,
                notes=idle_notes[short],
            )
        )
    rows.append(
        Comparison(
            name=f"populate {size} CronJobs",
            metric="create rate",
            unit="objects/s",
            cronloop=Measurement("cronloop create_many (1,000/batch)", tuple(cl_rates)),
            baseline=Measurement("APScheduler add_job", tuple(aps_rates)),
            notes=(
                f"one populate per run, median over its {len(cl_rates)} slices of "
                f"{n // len(cl_rates):,}; APScheduler has no batch add, so each add_job is its "
                f"own transaction ({len(aps_rates)} slices).{shrunk}"
            ),
        )
    )
    return rows


def _profile_main(argv: Sequence[str]) -> None:
    """``python -m bench.scale_cronjobs profile N OUT``: populate N, profile one start-up."""
    n, out = int(argv[0]), Path(argv[1])
    with tempfile.TemporaryDirectory(prefix="cronloop-scale-") as tmp:
        db = Path(tmp) / "c.db"
        choices = choose_schedules(n, seed=100_000, quiet_from=datetime.now(UTC))
        asyncio.run(_populate_cronloop(db, choices, 1))
        sample = _spawn("cronloop", db, n, 1.0, profile=out)
    print(f"start-up {sample.startup:.2f} s (under the profiler); report in {out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["profile"]:
        _profile_main(sys.argv[2:])
    else:
        _child_main(sys.argv[1:])

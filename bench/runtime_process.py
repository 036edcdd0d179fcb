"""Benchmark suite ``runtime_process``: attempts per second through the process runtime.

Each cronloop attempt runs through :class:`ProcessRuntime` end to end: spec validation, the
log check and the log file (created at the first byte of output), spawn with captured output,
exit watching, draining the pipe, and delivery of the ``Running`` and terminal reports to a
callback. The baseline, measured in the same run and interleaved with it, is the floor of what
any Python process launcher can do: a bare ``os.posix_spawn`` + ``os.waitpid`` loop of the same
command (no pipes, no logs, no new session or group). Both run sequentially and with 8
attempts in flight.

The rows:

- ``/bin/true`` with the runtime's defaults (a new session per attempt). This is the row the
  issue's target is about; it is measured on the standard event loop and again on uvloop,
  the loop ``cronloop up`` runs on (every other row is on the standard loop).
- ``/bin/true`` with ``ProcessRuntime(new_session=False)`` (a new process group only).
- ``echo`` of one line with the defaults. Its log file is created, because output arrives.
  The baseline runs the same command with its output on ``/dev/null``.
- ``/bin/true`` with 8 in flight while one CPU-bound process runs in a session of its own,
  with both settings of ``new_session``: a busy machine, made reproducible. The competing
  process is started and stopped by the suite (and stops by itself after two minutes).

The logs go to a directory under ``bench/.results``, on the same file system as the checkout,
not to ``/tmp``, which is a tmpfs on many machines. Each row names that file system.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Comparison, Measurement
from cronloop.cli.eventloop import LoopName, loop_factory
from cronloop.runtimes.process import ProcessRuntime
from cronloop.runtimes.report import AttemptReport
from cronloop.runtimes.spec import AttemptSpec, ProcessSettings

TRUE = shutil.which("true") or "/bin/true"
ECHO = shutil.which("echo") or "/bin/echo"
SETTINGS = ProcessSettings([TRUE])
RESULTS = Path(__file__).resolve().parent / ".results"
BLOCK = 25  # cronloop and the baseline alternate in blocks of this many runs


@dataclass(frozen=True)
class _Config:
    label: str
    argv: tuple[str, ...]
    new_session: bool
    target: float | None
    notes: str
    concurrency: tuple[int, ...] = (1, 8)
    contended: bool = False
    #: The event loop the attempts run on (the baseline has none): the standard loop, or
    #: uvloop, which ``cronloop up`` runs on.
    loop: LoopName = "asyncio"


CONFIGS = [
    _Config(
        "/bin/true attempts, defaults (new session), logs on disk",
        (TRUE,),
        True,
        0.7,
        "ProcessRuntime(): a new session per attempt, output captured, the log file checked "
        "before the spawn and created at the first byte (none comes), 2 reports per attempt; "
        "the baseline does none of it",
    ),
    _Config(
        "/bin/true attempts, defaults (new session), logs on disk, on uvloop",
        (TRUE,),
        True,
        0.7,
        "the first row's attempts on uvloop, the event loop `cronloop up` runs on (the rows "
        "without 'uvloop' run on the standard loop)",
        loop="uvloop",
    ),
    _Config(
        "/bin/true attempts, new process group, logs on disk",
        (TRUE,),
        False,
        0.7,
        "ProcessRuntime(new_session=False): a new process group in the runtime's session "
        "instead of a new session",
    ),
    _Config(
        "echo attempts (one line of output), defaults, logs on disk",
        (ECHO, "hello from a job"),
        True,
        None,
        "the log file is created on the first byte and the line written to it; the baseline "
        "runs the same echo with its output on /dev/null",
    ),
    _Config(
        "/bin/true attempts, defaults (new session), one CPU-bound process in another session",
        (TRUE,),
        True,
        None,
        "a busy machine: each attempt's new session is its own scheduler group "
        "(sched_autogroup), weighted like the controller's whole session, so with 8 in flight "
        "the controller gets a small share of the CPU; the baseline's children stay in its group",
        (8,),
        True,
    ),
    _Config(
        "/bin/true attempts, new process group, one CPU-bound process in another session",
        (TRUE,),
        False,
        None,
        "the same busy machine with ProcessRuntime(new_session=False): the attempts share the "
        "controller's scheduler group, as the baseline's children do",
        (8,),
        True,
    ),
]

_BURN = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def _contention(enabled: bool) -> Iterator[None]:
    """One CPU-bound process in a session of its own while the block runs (if ``enabled``)."""
    if not enabled:
        yield
        return
    burner = subprocess.Popen([sys.executable, "-c", _BURN], start_new_session=True)
    try:
        yield
    finally:
        burner.kill()
        burner.wait(timeout=10)


def _baseline(argv: tuple[str, ...], count: int, concurrency: int, devnull: int) -> float:
    """Seconds a bare posix_spawn + waitpid loop takes for ``count`` runs of ``argv``,
    ``concurrency`` children alive at a time."""
    args, env = list(argv), {"PATH": os.defpath}
    file_actions = [(os.POSIX_SPAWN_DUP2, devnull, 1)] if len(argv) > 1 else None
    begin = time.perf_counter()
    in_flight: set[int] = set()
    started = 0
    while started < count or in_flight:
        while started < count and len(in_flight) < concurrency:
            in_flight.add(os.posix_spawn(argv[0], args, env, file_actions=file_actions))
            started += 1
        pid, _ = os.waitpid(-1, 0) if concurrency > 1 else os.waitpid(next(iter(in_flight)), 0)
        in_flight.discard(pid)
    return time.perf_counter() - begin


async def _cronloop(
    runtime: ProcessRuntime,
    settings: ProcessSettings,
    ids: range,
    concurrency: int,
    log_dir: Path,
    tag: str,
) -> float:
    """Seconds ``runtime`` takes to run one attempt of ``settings`` per id in ``ids``."""
    finals: list[AttemptReport] = []

    def on_report(report: AttemptReport) -> None:
        if report.terminal:
            finals.append(report)

    async def worker(first: int) -> None:
        for i in ids[first::concurrency]:
            spec = AttemptSpec(
                attempt_id=f"{tag}-{i}",
                session="bench",
                job="bench",
                subjob="bench-local",
                target="local",
                step="main",
                attempt=1,
                settings=settings,
                log_path=log_dir / f"{tag}-{i}.log",
            )
            await runtime.start(spec, on_report)
            await runtime.wait(spec.attempt_id)

    begin = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - begin
    if len(finals) != len(ids) or any(f.exit_code != 0 for f in finals):
        raise RuntimeError(f"benchmark attempts did not all succeed: {len(finals)}/{len(ids)}")
    return elapsed


@dataclass
class _Run:
    cronloop_rate: float
    baseline_rate: float
    cronloop_cpu: float  # CPU seconds this process spent per attempt
    baseline_cpu: float


async def _one_run(
    config: _Config, count: int, concurrency: int, log_dir: Path, tag: str, devnull: int
) -> _Run:
    """Runs/s and CPU of (cronloop, baseline). The machine's load drifts, so the two alternate
    in blocks and each total is the sum of its blocks."""
    runtime = ProcessRuntime(retain_finished=concurrency, new_session=config.new_session)
    settings = ProcessSettings(list(config.argv))
    ours = base = ours_cpu = base_cpu = 0.0
    try:
        for first in range(0, count, BLOCK):
            ids = range(first, min(first + BLOCK, count))
            cpu = time.process_time()
            base += _baseline(config.argv, len(ids), concurrency, devnull)
            base_cpu += time.process_time() - cpu
            cpu = time.process_time()
            ours += await _cronloop(runtime, settings, ids, concurrency, log_dir, tag)
            ours_cpu += time.process_time() - cpu
    finally:
        await runtime.aclose()
    return _Run(count / ours, count / base, ours_cpu / count, base_cpu / count)


def _clear(log_dir: Path) -> None:
    for log in log_dir.iterdir():
        log.unlink()


def file_system_of(path: Path) -> str:
    """The type of the file system holding ``path`` (from /proc/self/mountinfo), or "?"."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return "?"
    best, kind = "", "?"
    target = str(path.resolve())
    for line in lines:
        fields = line.split()
        mount_point, fs_type = fields[4], fields[fields.index("-") + 1]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, fs_type
    return kind


def run(quick: bool) -> list[Comparison]:
    runs, count = (3, 50) if quick else (7, 300)
    rows = []
    RESULTS.mkdir(exist_ok=True)
    devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for number, config in enumerate(CONFIGS):
            # Each configuration on its own loop, of its own kind.
            with asyncio.Runner(loop_factory=loop_factory(config.loop)) as runner:
                rows += runner.run(_config_rows(number, config, runs, count, devnull))
    finally:
        os.close(devnull)
    return rows


async def _config_rows(
    number: int, config: _Config, runs: int, count: int, devnull: int
) -> list[Comparison]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="logs-", dir=RESULTS) as tmp:
        log_dir = Path(tmp)
        storage = file_system_of(log_dir)
        for concurrency in config.concurrency:
            with _contention(config.contended):
                # Warm-up: imports, page cache.
                await _one_run(config, BLOCK, concurrency, log_dir, "warm-up", devnull)
                _clear(log_dir)
                results = []
                for round_no in range(runs):
                    tag = f"k{number}-c{concurrency}-r{round_no}"
                    results.append(
                        await _one_run(config, count, concurrency, log_dir, tag, devnull)
                    )
                    _clear(log_dir)
            rows.append(_row(config, storage, concurrency, results, count))
    return rows


def _row(
    config: _Config, storage: str, concurrency: int, results: list[_Run], count: int
) -> Comparison:
    label = "sequential" if concurrency == 1 else f"concurrency {concurrency}"
    return Comparison(
        name=f"{config.label}, {label}",
        metric="throughput",
        unit="runs/s",
        cronloop=Measurement("ProcessRuntime", tuple(r.cronloop_rate for r in results)),
        baseline=Measurement("posix_spawn + waitpid", tuple(r.baseline_rate for r in results)),
        target=config.target,
        notes=config.notes if concurrency == config.concurrency[0] else "",
        extra={
            "attempts per run": str(count),
            "log directory": f"{storage} (bench/.results)",
            "parent CPU per attempt (median)": (
                f"cronloop {statistics.median(r.cronloop_cpu for r in results) * 1e6:.0f} µs, "
                f"baseline {statistics.median(r.baseline_cpu for r in results) * 1e6:.0f} µs"
            ),
            "load average at the end": f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        },
    )

"""``cronloop up``: the whole scheduler in one process, on an embedded SQLite store.

It opens (and migrates) the store in the state directory, applies every spec in the spec
directory and keeps watching it (a changed, added or atomically swapped file is applied again;
a file that does not validate is reported and the stored objects are left as they were), starts
the controllers with the inline and process runtimes, serves the REST API on 127.0.0.1 with a
bearer token saved in ``<state dir>/credentials.json``, and prints every run as it changes
phase. Ctrl-C stops it gracefully: running attempts are cancelled and recorded, and AtLeastOnce
runs interrupted this way start again on the next ``cronloop up``.

One ``cronloop up`` at a time owns a state directory: it holds an exclusive ``flock`` on
``<state dir>/up.lock`` for as long as it runs (the kernel releases it when the process dies,
``kill -9`` included), and a second one on the same directory stops before it touches anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import itertools
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

import typer
import uvicorn
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.markup import escape

from cronloop.api import Job, Phase, ResourceError, SubJob, load_resources
from cronloop.cli.eventloop import LoopName, loop_factory
from cronloop.controllers import (
    AdmissionController,
    AdmissionLimits,
    Manager,
    embedded_subjob,
    phase_of,
    typed,
    with_embedded_subjobs,
)
from cronloop.runtimes import InlineRuntime, ProcessRuntime, Runtime
from cronloop.server import ApiError, apply_to_store, check_apply, create_app
from cronloop.server.auth import load_or_create_credentials
from cronloop.store import EventType, Store, StoredObject, StoreError, WatchEvent, open_store
from cronloop.sync import PrometheusMetricsProvider

__all__ = [
    "LOCK_FILE",
    "RunPrinter",
    "StateDirInUse",
    "UpOptions",
    "apply_spec_dir",
    "hold_state_dir",
    "serve",
    "up_console",
]

logger = logging.getLogger(__name__)

#: The file in the state directory that the running ``cronloop up`` holds locked.
LOCK_FILE = "up.lock"

_PHASE_STYLE = {
    Phase.PENDING: "dim",
    Phase.PREPARING: "cyan",
    Phase.PREPARED: "cyan",
    Phase.RUNNING: "blue",
    Phase.SUCCEEDED: "green",
    Phase.FAILED: "red",
    Phase.CANCELLED: "yellow",
    Phase.TIMED_OUT: "red",
    Phase.LOST: "magenta",
    Phase.SKIPPED: "yellow",
}


@dataclass(frozen=True)
class UpOptions:
    """Where ``cronloop up`` keeps its state, what it loads, where it listens."""

    state_dir: Path
    spec_dirs: tuple[Path, ...]
    host: str = "127.0.0.1"
    port: int = 8086
    watch: bool = True
    quiet: bool = False
    limits: AdmissionLimits | None = None
    #: The event loop (see :mod:`cronloop.cli.eventloop`).
    loop: LoopName = "auto"


def _spec_files(spec_dirs: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for spec_dir in spec_dirs:
        if spec_dir.is_file():
            files.append(spec_dir)
            continue
        files.extend(
            p
            for p in sorted(spec_dir.iterdir())
            if p.suffix in {".yaml", ".yml"} and not p.name.startswith(".")
        )
    return files


async def apply_spec_dir(
    store: Store, spec_dirs: Iterable[Path], console: Console, seen: dict[Path, str] | None = None
) -> int:
    """Apply every spec file whose content changed since ``seen``; returns how many applied.

    A file is compared by its resolved path and a hash of its bytes, so a Kubernetes ConfigMap
    swap (the visible symlink never changes, its target does) and an editor's atomic rename
    are both noticed, and a spurious event is ignored.
    """
    seen = {} if seen is None else seen
    applied = 0
    for path in _spec_files(spec_dirs):
        try:
            data = path.read_bytes()
        except OSError as exc:
            console.print(f"[red]cannot read {path}: {exc}[/red]")
            continue
        digest = hashlib.sha256(data).hexdigest() + str(path.resolve())
        if seen.get(path) == digest:
            continue
        try:
            resources = load_resources(data.decode(), source=str(path))
            # The rules of `cronloop apply` (a Job's spec cannot change, SubJobs are not
            # written by hand, system labels and annotations are kept), checked for the
            # whole file before any of it is written: a file applies whole or not at all.
            for resource in resources:
                await check_apply(store, resource, source=str(path))
            for resource in resources:
                await apply_to_store(store, resource, source=str(path))
                applied += 1
        except (ResourceError, StoreError, ApiError, UnicodeDecodeError) as exc:
            console.print(f"[red]not applied: {escape(str(exc))}[/red]")
            continue
        seen[path] = digest
    return applied


async def _watch_specs(
    store: Store, spec_dirs: tuple[Path, ...], console: Console, seen: dict[Path, str]
) -> None:
    from watchfiles import awatch

    dirs = [d if d.is_dir() else d.parent for d in spec_dirs]

    # Watch the directories, not the files: a file watch is lost when the file is replaced
    # (editors, ConfigMap ..data swaps). A slow re-scan covers file systems without events.
    async def rescan() -> None:
        while True:
            await asyncio.sleep(30)
            await apply_spec_dir(store, spec_dirs, console, seen)

    rescanner = asyncio.create_task(rescan())
    try:
        async for _ in awatch(*dirs, recursive=False, step=100):
            count = await apply_spec_dir(store, spec_dirs, console, seen)
            if count:
                console.print(f"[cyan]spec change: applied {count} resource(s)[/cyan]")
    finally:
        rescanner.cancel()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: ``cronloop up`` owns SIGINT/SIGTERM and shuts
    the API down after the controllers have recorded what they were doing."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class StateDirInUse(Exception):
    """Another ``cronloop up`` runs on this state directory."""


def _holder(fd: int) -> int | None:
    """The pid the lock file names (its holder writes it once it has the lock)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def hold_state_dir(state: Path) -> Iterator[None]:
    """Hold ``state`` for this process: an exclusive ``flock`` on ``<state>/up.lock``.

    :raises StateDirInUse: another process holds it (naming its pid when the file does).
    """
    state.mkdir(parents=True, exist_ok=True)
    # O_CLOEXEC: attempts and the store's writer are spawned children; one that outlived this
    # process must not keep the directory locked.
    fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            by = f"pid {pid}" if pid is not None else "pid unknown"
            raise StateDirInUse(
                f"state directory {state} is in use by another `cronloop up` ({by}): stop it "
                "first, or give this one another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def up_console(file: TextIO | None = None) -> Console:
    """The console ``cronloop up`` prints to; lines are never wrapped (a terminal wraps them
    itself, and a redirected log must keep one line per event)."""
    return Console(file=file, soft_wrap=True)


def _cached(manager: Manager) -> Callable[[], Awaitable[Snapshot]]:
    async def snapshot() -> Snapshot:
        await manager.wait_ready()
        cache = manager.cache
        return cache.objects("Job"), cache.objects("SubJob"), manager.listed_revision

    return snapshot


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%H:%M:%S") if value else "-"


class RunPrinter:
    """One line per run phase change, the newcomer's view of jobs firing.

    Only changes are news: what :meth:`seed` is given (the runs as they were when ``up``
    started) is never printed, nor is a deletion (pruning a finished run is not a phase
    change).
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        #: The newest version seen of each run and sub-job: a change older than what is known
        #: (the seed can be newer than the first events watched) is not news.
        self._versions: dict[str, int] = {}
        self._last: dict[str, Phase] = {}
        self._warned: dict[str, int] = {}
        #: Sub-jobs already reported failed.
        self._failed: set[str] = set()

    def seed(self, jobs: Iterable[StoredObject], subjobs: Iterable[StoredObject]) -> None:
        """Take the stored Jobs and SubJobs as known: what is printed next is what changes.

        Read from the stored status as is: parsing every object of a big store into models
        would cost seconds at start.
        """
        jobs = list(jobs)
        for job in jobs:
            self._versions[job.name] = job.resource_version
            self._last[job.name] = phase_of(job.status.get("phase"))
            self._warned[job.name] = len(job.status.get("warnings") or ())
        kept = (
            embedded_subjob(job)
            for job in jobs
            # Only a failed one matters here (made from its run: that costs a validation).
            if phase_of((job.status.get("subJob") or {}).get("phase")) is Phase.FAILED
        )
        for sub in itertools.chain(subjobs, (sub for sub in kept if sub is not None)):
            self._versions[sub.name] = sub.resource_version
            if phase_of(sub.status.get("phase")) is Phase.FAILED:
                self._failed.add(sub.name)

    def show(self, event: WatchEvent) -> None:
        """Print what ``event`` changed, if it is news."""
        obj = event.object
        if event.type is EventType.DELETED:
            self._versions.pop(obj.name, None)
            self._last.pop(obj.name, None)
            self._warned.pop(obj.name, None)
            self._failed.discard(obj.name)
            return
        if obj.resource_version <= self._versions.get(obj.name, 0):
            return
        self._versions[obj.name] = obj.resource_version
        if obj.kind == "SubJob":
            sub = typed(obj, SubJob)
            if sub.status.phase is Phase.FAILED and obj.name not in self._failed:
                self._failed.add(obj.name)
                attempt = sub.status.attempts[-1] if sub.status.attempts else None
                detail = f"{attempt.reason}: {attempt.message}" if attempt else ""
                self._console.print(f"    [red]{obj.name} failed[/red] {escape(detail)}")
            return
        job = typed(obj, Job)
        phase = job.status.phase
        for warning in job.status.warnings[self._warned.get(obj.name, 0) :]:
            self._console.print(f"    [yellow]warning: {escape(warning)}[/yellow]")
        self._warned[obj.name] = len(job.status.warnings)
        if self._last.get(obj.name) == phase:
            return
        self._last[obj.name] = phase
        style = _PHASE_STYLE.get(phase, "")
        counts = job.status.counts
        total = counts.total
        progress = f"{counts.succeeded}/{total} targets" if total else ""
        extra = ""
        if phase.terminal and job.status.start_time and job.status.completion_time:
            seconds = (job.status.completion_time - job.status.start_time).total_seconds()
            extra = f"in {seconds:.2f}s"
        if job.status.reason and phase not in (Phase.SUCCEEDED,):
            extra += f" {job.status.reason}"
        scheduled = (
            f"(scheduled {_when(job.status.scheduled_time)})"
            if job.status.scheduled_time
            else "(manual)"
        )
        self._console.print(
            f"{_when(datetime.now().astimezone())} [bold]{escape(obj.name)}[/bold] "
            f"[{style}]{phase.value}[/{style}] {progress} {escape(extra)} [dim]{scheduled}[/dim]"
        )


#: The runs and sub-jobs there are, and a store revision they are all at least as new as.
Snapshot = tuple[Iterable[StoredObject], Iterable[StoredObject], int]


async def _listed(store: Store) -> Snapshot:
    jobs = await store.list("Job")
    subjobs = await store.list("SubJob")
    return jobs.items, subjobs.items, min(jobs.revision, subjobs.revision)


async def _print_runs(
    store: Store, console: Console, snapshot: Callable[[], Awaitable[Snapshot]] | None = None
) -> None:
    """Print every run phase change from now on (see :class:`RunPrinter`).

    ``snapshot`` gives what already was (by default, a listing of the store; ``cronloop up``
    gives the manager's cache, which holds it anyway, instead of reading every run twice at
    start); the changes are watched from its revision, so none is missed.
    """
    printer = RunPrinter(console)
    jobs, subjobs, revision = await (snapshot or functools.partial(_listed, store))()
    printer.seed(jobs, subjobs)
    kinds = ("Job", "SubJob")
    events = store.watch(kinds=kinds, from_revision=revision)
    async for event in with_embedded_subjobs(aiter(events), kinds):
        printer.show(event)


async def serve(
    options: UpOptions,
    *,
    console: Console | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the scheduler until ``stop`` is set (or SIGINT/SIGTERM when ``stop`` is None).

    :raises StateDirInUse: another ``cronloop up`` runs on the state directory (nothing was
        touched: no recovery, no credentials written).
    """
    console = console or up_console()
    with hold_state_dir(options.state_dir):
        await _serve(options, console, ready, stop)


async def _serve(
    options: UpOptions,
    console: Console,
    ready: asyncio.Event | None,
    stop: asyncio.Event | None,
) -> None:
    state = options.state_dir
    log_dir = state / "logs"
    url = f"http://{options.host}:{options.port}"
    credentials = load_or_create_credentials(state, server=url)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    own_signals = not stop.is_set() and ready is None
    if own_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

    registry = CollectorRegistry()
    metrics = PrometheusMetricsProvider(registry=registry)
    # The writer in a process of its own: its statements never wait for the loop's GIL.
    store = await open_store(state / "cronloop.db", writer="process")
    runtimes: dict[str, Runtime] = {"inline": InlineRuntime(), "process": ProcessRuntime()}
    admission = None
    if options.limits is not None and options.limits != AdmissionLimits():
        admission = AdmissionController(options.limits, registry=registry)
    manager = Manager(
        store, runtimes, log_dir=log_dir, metrics=metrics, admission=admission, tune_gc=True
    )
    if manager.heap is not None:
        manager.heap.register(registry)
    seen: dict[Path, str] = {}
    applied = await apply_spec_dir(store, options.spec_dirs, console, seen)
    app = create_app(
        store,
        token=credentials.token,
        log_dir=log_dir,
        registry=registry,
        manager_status=lambda: dataclasses.asdict(manager.statistics()),
    )
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="warning",
        lifespan="off",
    )
    server = _EmbeddedServer(config)
    try:
        async with asyncio.TaskGroup() as tg:
            manager_task = tg.create_task(manager.run(), name="manager")
            server_task = tg.create_task(server.serve(), name="api-server")
            side: list[asyncio.Task[None]] = []
            if options.watch and options.spec_dirs:
                side.append(tg.create_task(_watch_specs(store, options.spec_dirs, console, seen)))
            if not options.quiet:
                side.append(tg.create_task(_print_runs(store, console, _cached(manager))))
            await manager.wait_ready()
            console.print(
                f"[bold green]cronloop is up[/bold green]: {applied} resource(s) from "
                f"{', '.join(str(d) for d in options.spec_dirs) or 'no spec dir'}\n"
                f"  API      {url}  (token in {state / 'credentials.json'})\n"
                f"  metrics  {url}/metrics\n"
                f"  state    {state}\n"
                "  try      cronloop get cronjobs   |   cronloop get jobs -w   |   "
                "cronloop logs <job>\n"
                "Ctrl-C stops it."
            )
            if ready is not None:
                ready.set()
            await stop.wait()
            console.print("[yellow]stopping: cancelling running attempts...[/yellow]")
            for task in side:
                task.cancel()
            server.should_exit = True
            manager.stop()
            await server_task
            await manager_task
    finally:
        if own_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        await store.close()
    console.print("[green]stopped[/green]")


def run_up(options: UpOptions) -> None:
    """Entry point for the CLI: run :func:`serve` and map failures to a clear exit."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with (
            contextlib.suppress(KeyboardInterrupt),
            asyncio.Runner(loop_factory=loop_factory(options.loop)) as runner,
        ):
            runner.run(serve(options))
    except StateDirInUse as exc:
        Console(file=sys.stderr, highlight=False, soft_wrap=True).print(
            f"error: {exc}", markup=False
        )
        raise typer.Exit(1) from None

"""The log sweeper: a deleted Job's log directory goes, on its own and through the manager.

Unit tests drive :class:`LogSweeper` directly; the manager tests run the controllers on a fake
clock and check that pruned, deleted and crash-orphaned runs leave no log directory behind.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from pathlib import Path

import pytest

from cronloop.api import Phase
from cronloop.controllers import LOG_SETTLE_SECONDS, LogSweeper, LoopClock
from cronloop.runtimes import ProcessRuntime, ProcessSettings
from cronloop.store import EventType, WatchEvent
from tests.runtimes.helpers import Recorder, make_spec

from .harness import START, Stack, running_stack
from .support import assert_quiet, wait_until

WAIT = 30.0


def _log_dir_of(log_dir: Path, job: str, *files: str) -> Path:
    path = log_dir / job
    path.mkdir(parents=True, exist_ok=True)
    for name in files or ("job-eu.1.main.log",):
        (path / name).write_text("output\n")
    return path


def _entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def _age(path: Path, seconds: float = 3600.0) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def _wait_idle(sweeper: LogSweeper) -> None:
    async with asyncio.timeout(WAIT):
        await sweeper.wait_idle()


async def test_a_deleted_jobs_directory_is_removed_and_nothing_else(tmp_path: Path) -> None:
    gone = _log_dir_of(tmp_path, "gone", "a.1.prepare.log", "a.2.main.log")
    kept = _log_dir_of(tmp_path, "kept")
    (tmp_path / "not-a-dir").write_text("x")
    sweeper = LogSweeper(tmp_path)
    sweeper.deleted("gone")
    sweeper.deleted("never-wrote")  # a silent job has no directory: nothing to do
    sweeper.deleted("not-a-dir")  # not a directory: not a Job's logs
    sweeper.deleted("..")  # never a path outside the log directory
    await _wait_idle(sweeper)
    assert not gone.exists()
    assert kept.exists()
    assert _entries(tmp_path) == ["kept", "not-a-dir"]
    assert sweeper.statistics().removed == 1
    assert sweeper.statistics().pending == 0


async def test_a_name_created_again_before_the_removal_keeps_its_directory(
    tmp_path: Path,
) -> None:
    again = _log_dir_of(tmp_path, "again")
    sweeper = LogSweeper(tmp_path)
    sweeper.deleted("again")
    sweeper.created("again")  # re-created before the worker got to it
    await _wait_idle(sweeper)
    assert again.exists()


@pytest.mark.looptime
async def test_a_job_deleted_while_running_is_removed_again_once_settled(
    tmp_path: Path,
) -> None:
    running = _log_dir_of(tmp_path, "running")
    sweeper = LogSweeper(tmp_path)
    sweeper.deleted("running")
    await _wait_idle(sweeper)
    assert not running.exists()
    # A stopping attempt writes its last line, which creates the directory again.
    _log_dir_of(tmp_path, "running", "job-eu.1.main.log")
    await asyncio.sleep(LOG_SETTLE_SECONDS + 1)  # fake time: the second removal is due
    await _wait_idle(sweeper)
    assert not running.exists()
    assert sweeper.statistics().removed == 2


async def test_close_drops_what_is_pending(tmp_path: Path) -> None:
    kept = _log_dir_of(tmp_path, "late")
    sweeper = LogSweeper(tmp_path)
    sweeper.deleted("late")
    sweeper.close()
    await _wait_idle(sweeper)
    assert kept.exists()  # the next start's sweep removes it


async def test_the_start_sweep_removes_old_directories_of_jobs_that_are_gone(
    tmp_path: Path,
) -> None:
    live = _log_dir_of(tmp_path, "live")
    gone = [_log_dir_of(tmp_path, f"gone-{i}") for i in range(3)]
    recent = _log_dir_of(tmp_path, "created-after-the-listing")
    (tmp_path / "stray-file").write_text("x")
    for path in [live, *gone]:
        _age(path)
    sweeper = LogSweeper(tmp_path)
    sweeper.sweep(["live"], before=time.time() - 60)
    await _wait_idle(sweeper)
    assert _entries(tmp_path) == [
        "created-after-the-listing",
        "live",
        "stray-file",
    ]
    assert recent.exists()
    assert sweeper.statistics().swept == 3


async def test_the_start_sweep_is_bounded_and_spares_names_created_meanwhile(
    tmp_path: Path,
) -> None:
    for i in range(5):
        _age(_log_dir_of(tmp_path, f"gone-{i}"))
    sweeper = LogSweeper(tmp_path, sweep_limit=2)
    sweeper.sweep([], before=time.time() - 60)
    await _wait_idle(sweeper)
    assert len(_entries(tmp_path)) == 3  # the rest waits for the next start
    assert sweeper.statistics().swept == 2

    sweeper = LogSweeper(tmp_path)
    sweeper.sweep([], before=time.time() - 60)
    for i in range(5):
        sweeper.created(f"gone-{i}")  # seen in the feed while the scan ran
    await _wait_idle(sweeper)
    assert len(_entries(tmp_path)) == 3


async def test_the_start_sweep_without_a_log_directory_does_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sweeper = LogSweeper(tmp_path / "none")
    sweeper.sweep([])
    await _wait_idle(sweeper)
    assert sweeper.statistics().swept == 0
    # wait_idle() neither raises a sweep's error nor retrieves it: a sweep that failed would
    # also count 0. Its error shows as "Task exception was never retrieved" once it is freed.
    gc.collect()
    assert_quiet(caplog)
    assert not (tmp_path / "none").exists()


async def test_removing_the_log_of_a_running_attempt_does_not_break_it(tmp_path: Path) -> None:
    """The attempt keeps writing to its open (now unlinked) file and ends as it would have."""
    log_dir = tmp_path / "logs"
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    script = f'echo before; read line < "{fifo}"; echo after; echo "$line"'
    spec = make_spec(
        tmp_path,
        ProcessSettings(["sh", "-c", script]),
        job="busy",
        log_path=log_dir / "busy" / "busy-eu.1.main.log",
    )
    runtime = ProcessRuntime()
    recorder = Recorder()
    try:
        async with asyncio.timeout(WAIT):
            await runtime.start(spec, report=recorder)
            async for chunk in runtime.logs(spec.attempt_id, follow=True):
                if b"before" in chunk:
                    break  # the log file exists and is being written
            sweeper = LogSweeper(log_dir)
            sweeper.deleted("busy")
            await sweeper.wait_idle()
            assert not (log_dir / "busy").exists()
            await asyncio.to_thread(fifo.write_text, "go on\n")
            final = await runtime.wait(spec.attempt_id)
            sweeper.close()
    finally:
        await runtime.aclose()
    assert final.phase is Phase.SUCCEEDED, final
    recorder.check(spec.attempt_id)


# ---- through the manager -----------------------------------------------------------------------


class _JobEvents:
    """Records the Job names the manager's sweeper is told about, with a way to wait for them."""

    def __init__(self, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
        self.added: set[str] = set()
        self.deleted: set[str] = set()
        self._changed = asyncio.Event()
        self._sweeper = sweeper = stack.manager.logs
        observe = sweeper.observe

        def recording(event: WatchEvent) -> None:
            observe(event)
            if event.object.kind != "Job":
                return
            if event.type is EventType.ADDED:
                self.added.add(event.object.name)
            elif event.type is EventType.DELETED:
                self.deleted.add(event.object.name)
            self._changed.set()

        monkeypatch.setattr(sweeper, "observe", recording)

    async def wait_removed(self, names: set[str]) -> None:
        """Wait until the sweeper was told of the deletion of each of ``names``, then until it
        has done what it was asked."""
        await wait_until(self._changed, lambda: names <= self.deleted, within=WAIT)
        await _wait_idle(self._sweeper)


CRONJOB = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: chatty}
spec:
  schedule: "@every 10s"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    targets: [eu, us]
    main:
      runtime: inline
      callable: "cronloop.demos.jobs:report"
"""


def _dirs(log_dir: Path) -> set[str]:
    return {p.name for p in log_dir.iterdir()} if log_dir.exists() else set()


@pytest.mark.looptime(start=0)
async def test_pruned_and_deleted_runs_leave_no_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir = tmp_path / "logs"
    async with running_stack(tmp_path) as stack:
        events = _JobEvents(stack, monkeypatch)
        await stack.apply(CRONJOB)
        # Fake time: four runs fall due and end, and all but the newest are pruned. The schedule
        # is what is tested here: a wait for the pruning would make the check below hold by
        # construction.
        await asyncio.sleep(45)
        live = {job.metadata.name for job in await stack.jobs("chatty")}
        pruned = events.added - live
        assert len(pruned) >= 3
        await events.wait_removed(pruned)
        assert _dirs(log_dir) <= live
        assert _dirs(log_dir)  # the live run's logs are still there

        # Deleting the CronJob deletes its runs, and with them their logs.
        await stack.store.delete("CronJob", "chatty")
        await events.wait_removed(events.added)
        assert _dirs(log_dir) == set()


@pytest.mark.looptime(start=0)
async def test_a_job_deleted_through_the_api_loses_its_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir = tmp_path / "logs"
    async with running_stack(tmp_path) as stack:
        events = _JobEvents(stack, monkeypatch)
        await stack.apply(
            """
apiVersion: cronloop.dev/v1
kind: Job
metadata: {name: once}
spec:
  targets: [eu]
  main: {runtime: inline, callable: "cronloop.demos.jobs:report"}
"""
        )
        assert (await stack.wait_job("once")).status.phase is Phase.SUCCEEDED
        assert _dirs(log_dir) == {"once"}
        await stack.store.delete("Job", "once")
        await events.wait_removed({"once"})
        assert _dirs(log_dir) == set()


@pytest.mark.looptime(start=0)
async def test_a_restart_sweeps_the_logs_of_jobs_deleted_while_down(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    clock = LoopClock(START)
    async with running_stack(tmp_path, clock=clock) as stack:
        await stack.apply(CRONJOB.replace("successfulJobsHistoryLimit: 1", ""))

        async def two_runs_ended() -> bool:
            return sum(job.status.phase.terminal for job in await stack.jobs("chatty")) >= 2

        await stack.wait_for(two_runs_ended, within=WAIT)
        live = {job.metadata.name for job in await stack.jobs("chatty")}
    assert _dirs(log_dir) == live
    # Left behind by a crash between a prune and its removal.
    for name in ("chatty-crashed-1", "chatty-crashed-2"):
        _age(_log_dir_of(log_dir, name))
    async with running_stack(tmp_path, clock=clock) as stack:
        await _wait_idle(stack.manager.logs)
        assert stack.manager.logs.statistics().swept == 2
    assert _dirs(log_dir) >= live
    assert not _dirs(log_dir) & {"chatty-crashed-1", "chatty-crashed-2"}

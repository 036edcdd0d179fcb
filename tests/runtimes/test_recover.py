"""Crash recovery of the process runtime: a controller is killed with SIGKILL while its attempt
runs, and a fresh runtime must settle the attempt without ever running it twice or touching
an unrelated process that reuses a pid."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from cronloop.api.phase import Phase
from cronloop.runtimes.inline import InlineRuntime
from cronloop.runtimes.process import ProcessRuntime
from cronloop.runtimes.report import Reason
from cronloop.runtimes.spec import RecoveryRecord
from tests.runtimes.helpers import WAIT, await_gone, gone

# A controller that starts one attempt (a shell with two grandchildren, all ignoring SIGTERM
# so that recovery needs its SIGKILL), prints the Running identity and the tree, then hangs.
CONTROLLER = r"""
import asyncio, json, sys
from pathlib import Path
import psutil
from cronloop.runtimes import AttemptSpec, ProcessRuntime, ProcessSettings

SCRIPT = "trap '' TERM; (trap '' TERM; sleep 300) & (trap '' TERM; sleep 300) & echo ready; wait"

async def main() -> None:
    runtime = ProcessRuntime()
    seen = asyncio.Event()
    spec = AttemptSpec(
        attempt_id="orphan-1", session="old", job="j", subjob="j-eu", target="eu", step="main",
        attempt=1, settings=ProcessSettings(SCRIPT, shell=True), log_path=Path(sys.argv[1]),
    )
    handle = await runtime.start(spec, lambda report: None)
    async for chunk in runtime.logs(spec.attempt_id, follow=True):
        if b"ready" in chunk:
            break
    tree = [p.pid for p in psutil.Process(handle.pid).children(recursive=True)]
    print(json.dumps({"pid": handle.pid, "start": handle.process_start_time, "tree": tree}))
    sys.stdout.flush()
    await seen.wait()

asyncio.run(main())
"""


@dataclass
class Orphan:
    pid: int
    start_time: float
    tree: list[int]
    log_path: Path

    @property
    def pids(self) -> list[int]:
        return [self.pid, *self.tree]


@pytest.fixture
async def orphan(tmp_path: Path) -> AsyncIterator[Orphan]:
    """An attempt left running by a controller that was killed with SIGKILL."""
    log_path = tmp_path / "orphan.log"
    controller = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CONTROLLER,
        str(log_path),
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    assert controller.stdout is not None
    async with asyncio.timeout(WAIT):
        line = await controller.stdout.readline()
    info = json.loads(line)
    controller.kill()
    async with asyncio.timeout(WAIT):
        await controller.wait()
    found = Orphan(info["pid"], info["start"], info["tree"], log_path)
    assert not gone(found.pid)
    try:
        yield found
    finally:
        for pid in found.pids:
            if not gone(pid):
                psutil.Process(pid).kill()


@pytest.mark.slow
@pytest.mark.parametrize("pid_recorded", [True, False], ids=["pid-recorded", "pid-unknown"])
async def test_live_orphan_tree_is_killed_and_reported_lost(
    orphan: Orphan, pid_recorded: bool
) -> None:
    assert len(orphan.tree) >= 2
    record = RecoveryRecord(
        attempt_id="orphan-1",
        session="old",
        last_seq=1,
        pid=orphan.pid if pid_recorded else None,
        process_start_time=orphan.start_time if pid_recorded else None,
        log_path=orphan.log_path,
    )
    runtime = ProcessRuntime()
    try:
        async with asyncio.timeout(WAIT):
            [report] = await runtime.recover([record], grace=0.2)
    finally:
        await runtime.aclose()
    assert (report.phase, report.reason) == (Phase.LOST, Reason.ORPHAN_KILLED)
    assert (report.attempt_id, report.session, report.seq) == ("orphan-1", "old", 2)
    assert str(orphan.pid) in report.message
    assert await await_gone(orphan.pids) == []
    assert "recovered after a controller restart" in orphan.log_path.read_text()


async def test_dead_process_is_reported_gone(tmp_path: Path) -> None:
    finished = psutil.Popen(["/bin/true"])
    start_time = finished.create_time()
    assert finished.wait(timeout=WAIT) == 0
    record = RecoveryRecord(
        attempt_id="a1", session="s", last_seq=4, pid=finished.pid, process_start_time=start_time
    )
    runtime = ProcessRuntime()
    try:
        [report] = await runtime.recover([record])
    finally:
        await runtime.aclose()
    assert (report.phase, report.reason, report.seq) == (Phase.LOST, Reason.PROCESS_GONE, 5)
    assert report.pid == finished.pid
    assert report.terminal


async def test_reused_pid_is_never_killed() -> None:
    # A live process that happens to have the recorded pid but started at another time.
    unrelated = psutil.Popen(["sleep", "300"])
    try:
        record = RecoveryRecord(
            attempt_id="a1",
            session="s",
            pid=unrelated.pid,
            process_start_time=unrelated.create_time() - 3600.0,
        )
        runtime = ProcessRuntime()
        try:
            [report] = await runtime.recover([record], grace=0.1)
        finally:
            await runtime.aclose()
        assert (report.phase, report.reason) == (Phase.LOST, Reason.PROCESS_GONE)
        assert unrelated.is_running()
        assert unrelated.status() != psutil.STATUS_ZOMBIE
    finally:
        unrelated.kill()
        unrelated.wait(timeout=WAIT)


async def test_recovery_without_any_identity_is_gone_and_keeps_order(tmp_path: Path) -> None:
    records = [
        RecoveryRecord(attempt_id=f"r{i}", session="s", last_seq=i, log_path=tmp_path / f"r{i}.log")
        for i in range(3)
    ]
    runtime = ProcessRuntime()
    try:
        reports = await runtime.recover(records)
    finally:
        await runtime.aclose()
    assert [(r.attempt_id, r.seq, r.reason) for r in reports] == [
        ("r0", 1, Reason.PROCESS_GONE),
        ("r1", 2, Reason.PROCESS_GONE),
        ("r2", 3, Reason.PROCESS_GONE),
    ]
    assert "no longer exists" in (tmp_path / "r1.log").read_text()


async def test_inline_attempts_of_a_previous_process_are_gone(tmp_path: Path) -> None:
    runtime = InlineRuntime()
    try:
        [report] = await runtime.recover(
            [RecoveryRecord(attempt_id="i1", session="s", log_path=tmp_path / "i1.log")]
        )
    finally:
        await runtime.aclose()
    assert (report.phase, report.reason, report.seq) == (Phase.LOST, Reason.PROCESS_GONE, 2)
    assert "ended with it" in (tmp_path / "i1.log").read_text()

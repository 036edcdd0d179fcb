"""Crash recovery finds a process by the pid and start time its Running report recorded.

The start time in the Running report usually comes from the boot clock read around the spawn,
not from /proc; recovery compares it with psutil's view of the process. These tests use a
record whose attempt id is not in the process's environment, so only the recorded identity
(pid + start time) can match.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from cronloop.api.phase import Phase
from cronloop.runtimes.process import ProcessRuntime
from cronloop.runtimes.proctree import same_start_time
from cronloop.runtimes.report import Reason
from cronloop.runtimes.spec import ProcessSettings, RecoveryRecord
from tests.runtimes.helpers import Recorder, finish, make_spec


async def test_the_recorded_pid_and_start_time_find_the_process(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    handle = await process_runtime.start(
        make_spec(tmp_path, ProcessSettings(["sleep", "300"])), recorder
    )
    running = recorder.reports["a1"][0]
    assert running.pid is not None
    assert running.process_start_time is not None
    assert same_start_time(running.process_start_time, psutil.Process(handle.pid).create_time())
    other = ProcessRuntime()
    try:
        record = RecoveryRecord(
            attempt_id="recorded-elsewhere",
            session="old",
            pid=running.pid,
            process_start_time=running.process_start_time,
        )
        [report] = await other.recover([record], grace=5.0)
    finally:
        await other.aclose()
    assert (report.phase, report.reason) == (Phase.LOST, Reason.ORPHAN_KILLED)
    final = await finish(process_runtime, "a1")  # its own runtime sees the kill
    assert (final.phase, final.signal_name) == (Phase.FAILED, "SIGTERM")


async def test_another_start_time_is_another_process_and_is_left_alone(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    await process_runtime.start(make_spec(tmp_path, ProcessSettings(["sleep", "300"])), recorder)
    running = recorder.reports["a1"][0]
    assert running.pid is not None
    assert running.process_start_time is not None
    other = ProcessRuntime()
    try:
        record = RecoveryRecord(
            attempt_id="recorded-elsewhere",
            session="old",
            pid=running.pid,
            process_start_time=running.process_start_time - 1.0,  # as if the pid were reused
        )
        [report] = await other.recover([record], grace=5.0)
    finally:
        await other.aclose()
    assert (report.phase, report.reason) == (Phase.LOST, Reason.PROCESS_GONE)
    assert psutil.Process(running.pid).status() != psutil.STATUS_ZOMBIE  # still running
    await process_runtime.cancel("a1", grace=0)
    assert (await finish(process_runtime, "a1")).phase is Phase.CANCELLED

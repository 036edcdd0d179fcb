"""Tests of the process runtime with real processes: outcomes, stopping whole trees, the
environment, logs, report ordering and shutdown."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cronloop.api.phase import Phase
from cronloop.runtimes import _fdwatch, logfile, process, proctree
from cronloop.runtimes.base import AttemptExistsError, RuntimeClosedError, UnknownAttemptError
from cronloop.runtimes.logfile import truncation_marker
from cronloop.runtimes.process import ProcessRuntime, default_base_env
from cronloop.runtimes.proctree import process_start_time, same_start_time
from cronloop.runtimes.report import AttemptReport, Reason
from cronloop.runtimes.spec import InlineSettings, ProcessSettings
from tests.runtimes.helpers import (
    WAIT,
    Recorder,
    await_gone,
    finish,
    gone,
    make_spec,
    read_until,
)

# A tree of four processes (the shell, a sleeper, a subshell and its own sleeper) that all
# ignore SIGTERM, so only the SIGKILL after the grace period ends it. Each sleeper says "up"
# just before it execs, so once the log shows READY the whole tree exists.
STUBBORN_TREE = """
trap '' TERM
(trap '' TERM; echo up1; exec sleep 300) &
(trap '' TERM; sh -c 'echo up2; exec sleep 300' & wait) &
wait
"""
READY = (b"up1", b"up2")


async def run(
    runtime: ProcessRuntime,
    tmp_path: Path,
    recorder: Recorder,
    settings: ProcessSettings,
    **kw: object,
) -> AttemptReport:
    spec = make_spec(tmp_path, settings, **kw)
    await runtime.start(spec, recorder)
    await finish(runtime, spec.attempt_id)
    return recorder.check(spec.attempt_id)


async def test_exit_zero_succeeds(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    final = await run(process_runtime, tmp_path, recorder, ProcessSettings(["/bin/true"]))
    assert recorder.phases("a1") == [Phase.RUNNING, Phase.SUCCEEDED]
    assert (final.reason, final.exit_code, final.signal) == (Reason.COMPLETED, 0, None)
    assert final.pid is not None
    assert final.process_start_time is not None
    assert final.started_at is not None
    assert final.finished_at is not None
    assert final.started_at <= final.finished_at


async def test_nonzero_exit_fails_with_code(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    final = await run(process_runtime, tmp_path, recorder, ProcessSettings("exit 7", shell=True))
    assert (final.phase, final.reason, final.exit_code) == (Phase.FAILED, Reason.NON_ZERO_EXIT, 7)
    assert "7" in final.message


async def test_signal_death_is_recorded_by_name(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    final = await run(
        process_runtime, tmp_path, recorder, ProcessSettings("kill -USR1 $$", shell=True)
    )
    assert (final.phase, final.reason) == (Phase.FAILED, Reason.SIGNALED)
    assert (final.exit_code, final.signal, final.signal_name) == (None, 10, "SIGUSR1")


async def test_running_report_carries_the_process_identity(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    spec = make_spec(tmp_path, ProcessSettings(["sleep", "30"]))
    handle = await process_runtime.start(spec, recorder)
    running = recorder.reports["a1"][0]
    assert (running.phase, running.reason) == (Phase.RUNNING, Reason.STARTED)
    assert handle.pid == handle.pgid == running.pid
    assert handle.pid is not None
    assert os.getpgid(handle.pid) == handle.pid  # its own process group
    assert os.getsid(handle.pid) == handle.pid  # and its own session
    assert running.process_start_time is not None
    assert same_start_time(running.process_start_time, psutil.Process(handle.pid).create_time())
    await process_runtime.cancel("a1", grace=0)
    assert (await finish(process_runtime, "a1")).phase is Phase.CANCELLED


async def test_argv_passes_shell_metacharacters_literally(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    literal = "$HOME; echo injected | cat > /dev/null && `id` *"
    await run(process_runtime, tmp_path, recorder, ProcessSettings(["printf", "%s", literal]))
    assert (tmp_path / "a1.log").read_text() == literal


async def test_string_without_shell_is_split_not_interpreted(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    await run(process_runtime, tmp_path, recorder, ProcessSettings("printf '%s|' 'a b' $HOME"))
    assert (tmp_path / "a1.log").read_text() == "a b|$HOME|"


async def test_shell_true_runs_through_sh(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    settings = ProcessSettings("for w in x y; do printf $w; done | tr xy XY", shell=True)
    await run(process_runtime, tmp_path, recorder, settings)
    assert (tmp_path / "a1.log").read_text() == "XY"


async def test_env_is_minimal_merged_and_names_the_attempt(
    tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db")
    monkeypatch.setenv("TZ", "Europe/Paris")
    runtime = ProcessRuntime()
    try:
        settings = ProcessSettings(["env"], env={"GREETING": "hello", "TZ": "UTC"})
        spec = make_spec(tmp_path, settings, shard_index=3, attempt=2)
        await runtime.start(spec, recorder)
        await finish(runtime, "a1")
    finally:
        await runtime.aclose()
    lines = (tmp_path / "a1.log").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines)
    assert "DATABASE_URL" not in env  # not inherited: a scheduler's env holds secrets
    assert env["GREETING"] == "hello"
    assert env["TZ"] == "UTC"  # the step's env wins over the base env
    assert env["PATH"] == os.environ["PATH"]
    assert env["CRONLOOP_ATTEMPT_ID"] == "a1"
    assert env["CRONLOOP_TARGET"] == "eu"
    assert env["CRONLOOP_ATTEMPT"] == "2"
    assert env["CRONLOOP_SHARD_INDEX"] == "3"
    allowed = set(default_base_env()) | {"GREETING"}
    assert {k for k in env if not k.startswith("CRONLOOP_")} <= allowed | {"PWD", "SHLVL", "_"}


async def test_explicit_base_env_replaces_the_default(tmp_path: Path, recorder: Recorder) -> None:
    runtime = ProcessRuntime(base_env={"PATH": "/usr/bin:/bin", "ONLY": "this"})
    try:
        await runtime.start(make_spec(tmp_path, ProcessSettings(["/usr/bin/env"])), recorder)
        await finish(runtime, "a1")
    finally:
        await runtime.aclose()
    env = dict(line.split("=", 1) for line in (tmp_path / "a1.log").read_text().splitlines())
    assert {k for k in env if not k.startswith("CRONLOOP_")} == {"PATH", "ONLY"}


async def test_cwd_and_stdin(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    work = tmp_path / "work dir"
    work.mkdir()
    settings = ProcessSettings("pwd; cat; echo eof", shell=True, cwd=work)
    final = await run(process_runtime, tmp_path, recorder, settings)
    assert final.phase is Phase.SUCCEEDED
    assert (tmp_path / "a1.log").read_text() == f"{work}\neof\n"  # stdin is /dev/null


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        (ProcessSettings(["/nonexistent/tool", "x"]), "'/nonexistent/tool'"),
        (ProcessSettings(["no-such-command-anywhere"]), "'no-such-command-anywhere'"),
        (
            ProcessSettings(["/bin/true"], cwd="/nonexistent/dir"),
            "working directory '/nonexistent/dir'",
        ),
    ],
)
async def test_spawn_failure_is_a_failed_report_without_running(
    process_runtime: ProcessRuntime,
    tmp_path: Path,
    recorder: Recorder,
    settings: ProcessSettings,
    needle: str,
) -> None:
    handle = await process_runtime.start(make_spec(tmp_path, settings), recorder)
    assert handle.pid is None
    final = recorder.check("a1")  # delivered before start() returned
    assert recorder.phases("a1") == [Phase.FAILED]
    assert final.reason == Reason.SPAWN_FAILED
    assert needle in final.message
    assert needle in (tmp_path / "a1.log").read_text()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("where", ["spawn", "finish"])
async def test_an_internal_error_is_reported_and_leaks_nothing(
    process_runtime: ProcessRuntime,
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{where} bug")

    await finish_one(process_runtime, tmp_path, recorder, "warm")  # the watcher's own fds
    before = _open_fds()
    if where == "spawn":
        monkeypatch.setattr(process, "_spawn", broken)
    else:
        monkeypatch.setattr(ProcessRuntime, "_finish", broken)
    spec = make_spec(tmp_path, ProcessSettings(["/bin/echo", "out"]))
    handle = await process_runtime.start(spec, recorder)
    final = await finish(process_runtime, "a1")
    assert recorder.check("a1") == final
    assert (final.phase, final.reason) == (Phase.FAILED, "InternalError")
    assert final.message == f"RuntimeError: {where} bug"
    assert "process runtime failed while running attempt a1" in caplog.text
    if where == "spawn":
        assert recorder.phases("a1") == [Phase.FAILED]  # delivered before start() returned
        assert handle.pid is None
    else:
        assert recorder.phases("a1") == [Phase.RUNNING, Phase.FAILED]
        assert handle.pid is not None
        assert gone(handle.pid)
        assert (tmp_path / "a1.log").read_bytes() == b"out\n"
    assert _open_fds() == before


async def finish_one(
    runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder, attempt_id: str
) -> None:
    spec = make_spec(tmp_path, ProcessSettings(["/bin/true"]), attempt_id=attempt_id)
    await runtime.start(spec, recorder)
    await finish(runtime, attempt_id)


async def test_unwritable_log_is_reported(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    (tmp_path / "file").write_text("")
    spec = make_spec(tmp_path, ProcessSettings(["/bin/true"]), log_path=tmp_path / "file" / "x.log")
    await process_runtime.start(spec, recorder)
    final = recorder.check("a1")
    assert (final.phase, final.reason) == (Phase.FAILED, Reason.LOG_UNAVAILABLE)


async def test_stdout_and_stderr_share_the_log_in_order(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    script = "echo out1; echo err1 >&2; echo out2; echo err2 >&2"
    await run(process_runtime, tmp_path, recorder, ProcessSettings(script, shell=True))
    assert (tmp_path / "a1.log").read_text() == "out1\nerr1\nout2\nerr2\n"


async def test_log_limit_keeps_head_counts_rest_and_does_not_stop_the_child(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    # 2 MB through a 64 KiB pipe: the child would block forever if the pipe were not drained.
    script = "head -c 2000000 /dev/zero | tr '\\0' x; echo; echo done >&2"
    final = await run(
        process_runtime, tmp_path, recorder, ProcessSettings(script, shell=True), log_limit=1000
    )
    assert final.phase is Phase.SUCCEEDED
    dropped = 2_000_000 + len("\ndone\n") - 1000
    assert final.log_dropped_bytes == dropped
    assert (tmp_path / "a1.log").read_bytes() == b"x" * 1000 + b"\n" + truncation_marker(
        1000, dropped
    )


async def test_follow_streams_while_running_and_ends_with_the_attempt(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    # The child waits for a fifo the test opens only after it has followed the first line.
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    script = f"echo first; read line < '{fifo}'; echo second"
    await process_runtime.start(make_spec(tmp_path, ProcessSettings(script, shell=True)), recorder)
    received = b""
    async with asyncio.timeout(15):
        async for chunk in process_runtime.logs("a1", follow=True):
            received += chunk
            if received == b"first\n":
                assert recorder.phases("a1") == [Phase.RUNNING]
                await asyncio.to_thread(fifo.write_text, "go\n")
    assert received == b"first\nsecond\n"
    assert recorder.check("a1").phase is Phase.SUCCEEDED
    chunks = [c async for c in process_runtime.logs("a1")]
    assert b"".join(chunks) == received


@pytest.mark.slow
async def test_timeout_kills_the_whole_tree(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    spec = make_spec(
        tmp_path, ProcessSettings(STUBBORN_TREE, shell=True), timeout=1.0, kill_grace=0.3
    )
    handle = await process_runtime.start(spec, recorder)
    assert handle.pid is not None
    await read_until(process_runtime, "a1", *READY)
    tree = [handle.pid, *(p.pid for p in psutil.Process(handle.pid).children(recursive=True))]
    assert len(tree) >= 4
    final = await finish(process_runtime, "a1")
    assert recorder.check("a1") == final
    assert (final.phase, final.reason) == (Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED)
    assert final.signal_name == "SIGKILL"  # it ignored SIGTERM
    assert await await_gone(tree) == []
    assert "SIGKILL after 0.3 s" in (tmp_path / "a1.log").read_text()


@pytest.mark.slow
async def test_cancel_kills_the_whole_tree_and_is_idempotent(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    handle = await process_runtime.start(
        make_spec(tmp_path, ProcessSettings(STUBBORN_TREE, shell=True)), recorder
    )
    assert handle.pid is not None
    await read_until(process_runtime, "a1", *READY)
    tree = [handle.pid, *(p.pid for p in psutil.Process(handle.pid).children(recursive=True))]
    await process_runtime.cancel("a1", grace=30, reason="Superseded")
    await process_runtime.cancel("a1", grace=0.2)  # brings the SIGKILL forward
    await process_runtime.cancel("a1", grace=60)  # cannot postpone it again
    final = await finish(process_runtime, "a1")
    assert (final.phase, final.reason, final.signal_name) == (
        Phase.CANCELLED,
        "Superseded",
        "SIGKILL",
    )
    assert await await_gone(tree) == []
    await process_runtime.cancel("a1", grace=0)  # after the end: a no-op
    assert recorder.check("a1") == final


async def test_polite_stop_reports_the_signal_it_died_of(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    await process_runtime.start(make_spec(tmp_path, ProcessSettings(["sleep", "300"])), recorder)
    await process_runtime.cancel("a1", grace=30)
    final = await finish(process_runtime, "a1")
    assert (final.phase, final.reason, final.signal_name) == (
        Phase.CANCELLED,
        Reason.CANCELLED_BY_USER,
        "SIGTERM",
    )


async def test_stragglers_are_killed_when_the_main_process_exits(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    # The background sleep keeps the output pipe open; it must not outlive the attempt.
    script = "sleep 300 & echo $!"
    final = await run(process_runtime, tmp_path, recorder, ProcessSettings(script, shell=True))
    assert final.phase is Phase.SUCCEEDED
    straggler = int((tmp_path / "a1.log").read_text().split()[0])
    assert await await_gone([straggler]) == []


async def test_output_held_outside_the_group_does_not_hang_the_attempt(
    tmp_path: Path, recorder: Recorder
) -> None:
    runtime = ProcessRuntime(drain_timeout=0.2)
    try:
        # setsid moves the sleeper out of the group, so the group kill misses it; the main
        # process exits only once the sleeper has left the group (it says so on the fifo).
        fifo = tmp_path / "up"
        os.mkfifo(fifo)
        script = f"setsid sh -c 'echo up > {fifo}; exec sleep 300' & read x < {fifo}; echo $!"
        spec = make_spec(tmp_path, ProcessSettings(script, shell=True))
        await runtime.start(spec, recorder)
        final = await finish(runtime, "a1")
    finally:
        await runtime.aclose()
    assert final.phase is Phase.SUCCEEDED
    text = (tmp_path / "a1.log").read_text()
    escaped = int(text.split()[0])
    assert "stopped reading" in text
    os.kill(escaped, 9)
    assert await await_gone([escaped]) == []


async def test_exit_watching_without_pidfd(
    process_runtime: ProcessRuntime,
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(proctree, "_HAS_PIDFD", False)
    final = await run(process_runtime, tmp_path, recorder, ProcessSettings("exit 4", shell=True))
    assert final.exit_code == 4
    await process_runtime.start(
        make_spec(tmp_path, ProcessSettings(["sleep", "300"]), attempt_id="a2"), recorder
    )
    await process_runtime.cancel("a2", grace=5)
    assert (await finish(process_runtime, "a2")).signal_name == "SIGTERM"


async def test_async_callback_is_awaited_before_the_next_report(
    process_runtime: ProcessRuntime, tmp_path: Path
) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()
    seen: list[AttemptReport] = []

    async def slow_callback(report: AttemptReport) -> None:
        seen.append(report)
        if report.phase is Phase.RUNNING:
            entered.set()
            await release.wait()

    start = asyncio.create_task(
        process_runtime.start(make_spec(tmp_path, ProcessSettings(["/bin/true"])), slow_callback)
    )
    async with asyncio.timeout(15):
        await entered.wait()
    pid = seen[0].pid
    assert pid is not None
    # The process has exited, yet its terminal report waits for the Running callback...
    assert await await_gone([pid]) == []
    for _ in range(10):
        await asyncio.sleep(0)
    assert [r.phase for r in seen] == [Phase.RUNNING]
    assert not start.done()  # ...and start() returns only once Running was delivered.
    release.set()
    async with asyncio.timeout(15):
        await start
    await finish(process_runtime, "a1")
    assert [r.phase for r in seen] == [Phase.RUNNING, Phase.SUCCEEDED]


async def test_failing_callback_does_not_change_the_outcome(
    process_runtime: ProcessRuntime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(report: AttemptReport) -> None:
        raise RuntimeError("receiver is down")

    await process_runtime.start(make_spec(tmp_path, ProcessSettings(["/bin/true"])), broken)
    assert (await finish(process_runtime, "a1")).phase is Phase.SUCCEEDED
    assert "report callback failed for attempt a1" in caplog.text


@pytest.mark.slow
async def test_many_attempts_seeded_mix_reports_are_ordered(
    tmp_path: Path, recorder: Recorder
) -> None:
    rng = random.Random(20261123)
    runtime = ProcessRuntime(shutdown_grace=1.0)
    expected: dict[str, Phase] = {}
    try:
        for i in range(24):
            kind = rng.choice(["ok", "fail", "cancel", "timeout"])
            command = {"ok": "exit 0", "fail": "exit 2"}.get(kind, "sleep 300")
            timeout = 0.3 if kind == "timeout" else None
            spec = make_spec(
                tmp_path,
                ProcessSettings(command, shell=True),
                attempt_id=f"m{i}",
                timeout=timeout,
                kill_grace=0.2,
            )
            await runtime.start(spec, recorder)
            if kind == "cancel":
                await runtime.cancel(spec.attempt_id, grace=0.2)
            expected[spec.attempt_id] = {
                "ok": Phase.SUCCEEDED,
                "fail": Phase.FAILED,
                "cancel": Phase.CANCELLED,
                "timeout": Phase.TIMED_OUT,
            }[kind]
        async with asyncio.timeout(30):
            finals = await asyncio.gather(*(runtime.wait(a) for a in expected))
    finally:
        await runtime.aclose()
    assert {f.attempt_id: f.phase for f in finals} == expected
    for attempt_id in expected:
        assert recorder.check(attempt_id).phase is expected[attempt_id]
        assert recorder.phases(attempt_id)[0] is Phase.RUNNING


async def test_aclose_stops_everything_and_leaves_no_child(
    tmp_path: Path, recorder: Recorder
) -> None:
    runtime = ProcessRuntime(shutdown_grace=0.2)
    pids = []
    for i in range(3):
        spec = make_spec(tmp_path, ProcessSettings(STUBBORN_TREE, shell=True), attempt_id=f"c{i}")
        handle = await runtime.start(spec, recorder)
        assert handle.pid is not None
        await read_until(runtime, spec.attempt_id, *READY)
        pids += [handle.pid, *(p.pid for p in psutil.Process(handle.pid).children(recursive=True))]
    async with asyncio.timeout(15):
        await runtime.aclose()
    for i in range(3):
        final = recorder.check(f"c{i}")  # delivered before aclose() returned
        assert (final.phase, final.reason) == (Phase.CANCELLED, Reason.RUNTIME_SHUTDOWN)
    assert await await_gone(pids) == []
    assert [c for c in psutil.Process().children() if c.status() != psutil.STATUS_ZOMBIE] == []
    with pytest.raises(RuntimeClosedError, match="closed"):
        await runtime.start(
            make_spec(tmp_path, ProcessSettings(["/bin/true"]), attempt_id="x"), recorder
        )
    await runtime.aclose()  # idempotent


async def test_contract_errors(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    spec = make_spec(tmp_path, ProcessSettings(["/bin/true"]))
    await process_runtime.start(spec, recorder)
    with pytest.raises(AttemptExistsError, match="'a1' was already started"):
        await process_runtime.start(spec, recorder)
    with pytest.raises(UnknownAttemptError, match="'nope'"):
        await process_runtime.wait("nope")
    with pytest.raises(UnknownAttemptError, match="'nope'"):
        await process_runtime.cancel("nope", grace=1)
    with pytest.raises(UnknownAttemptError, match="'nope'"):
        process_runtime.logs("nope")
    with pytest.raises(ValueError, match="grace must be >= 0"):
        await process_runtime.cancel("a1", grace=-1)
    inline = make_spec(tmp_path, InlineSettings("os:getcwd"), attempt_id="i1")
    with pytest.raises(
        ValueError, match=r"cannot run AttemptSpec\.settings of type InlineSettings"
    ):
        await process_runtime.start(inline, recorder)
    await finish(process_runtime, "a1")


async def test_finished_attempts_are_forgotten_beyond_the_bound(
    tmp_path: Path, recorder: Recorder
) -> None:
    runtime = ProcessRuntime(retain_finished=2)
    try:
        for i in range(3):
            await runtime.start(
                make_spec(tmp_path, ProcessSettings(["/bin/true"]), attempt_id=f"r{i}"), recorder
            )
            await finish(runtime, f"r{i}")
        with pytest.raises(UnknownAttemptError):
            await runtime.wait("r0")
        assert (await runtime.wait("r2")).phase is Phase.SUCCEEDED
    finally:
        await runtime.aclose()


async def test_an_attempt_is_retired_before_wait_wakes_even_when_its_end_overtakes_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CI failure this reproduces: /bin/true ended while its Running report was still
    # being delivered, so the terminal report went out in a delivery task of its own and
    # wait() woke before the driver task had retired the attempt (r0 was still known).
    # Here the Running delivery is held until the terminal report has been built.
    runtime = ProcessRuntime(retain_finished=1)

    async def callback(report: AttemptReport) -> None:
        if report.phase is Phase.RUNNING:
            attempt = runtime._table.get(report.attempt_id)
            built = asyncio.Event()
            post = attempt.post

            def posting(*args: Any, **kwargs: Any) -> asyncio.Future[None] | None:
                delivery = post(*args, **kwargs)
                built.set()  # only the terminal report is posted after Running
                return delivery

            monkeypatch.setattr(attempt, "post", posting)
            await asyncio.wait_for(built.wait(), WAIT)

    try:
        for i in range(2):
            await runtime.start(
                make_spec(tmp_path, ProcessSettings(["/bin/true"]), attempt_id=f"r{i}"), callback
            )
            assert (await finish(runtime, f"r{i}")).phase is Phase.SUCCEEDED
        with pytest.raises(UnknownAttemptError):
            await runtime.wait("r0")
    finally:
        await runtime.aclose()


def test_start_time_matches_psutil_and_is_none_for_missing_pids() -> None:
    me = psutil.Process()
    start = process_start_time(me.pid)
    assert start is not None
    assert same_start_time(start, me.create_time())
    finished = psutil.Popen(["/bin/true"])
    finished.wait(timeout=15)
    assert process_start_time(finished.pid) is None


@pytest.mark.slow
async def test_process_group_mode_also_kills_the_whole_tree(
    tmp_path: Path, recorder: Recorder
) -> None:
    runtime = ProcessRuntime(new_session=False)
    try:
        handle = await runtime.start(
            make_spec(tmp_path, ProcessSettings(STUBBORN_TREE, shell=True)), recorder
        )
        assert handle.pid is not None
        assert os.getpgid(handle.pid) == handle.pid
        assert os.getsid(handle.pid) == os.getsid(0)  # stays in the runtime's session
        await read_until(runtime, "a1", *READY)
        tree = [handle.pid, *(p.pid for p in psutil.Process(handle.pid).children(recursive=True))]
        await runtime.cancel("a1", grace=0.2)
        final = await finish(runtime, "a1")
    finally:
        await runtime.aclose()
    assert (final.phase, final.signal_name) == (Phase.CANCELLED, "SIGKILL")
    assert await await_gone(tree) == []


async def test_exit_status_reaped_by_someone_else_is_reported_lost(
    process_runtime: ProcessRuntime, tmp_path: Path
) -> None:
    # A waitpid() elsewhere in the process (here: in the Running callback, which runs before
    # the runtime can see the exit) steals the status: the runtime must say so, not guess.
    def thief(report: AttemptReport) -> None:
        if report.phase is Phase.RUNNING:
            assert report.pid is not None
            os.waitpid(report.pid, 0)

    await process_runtime.start(make_spec(tmp_path, ProcessSettings(["/bin/true"])), thief)
    final = await finish(process_runtime, "a1")
    assert (final.phase, final.reason, final.exit_code) == (
        Phase.FAILED,
        Reason.EXIT_STATUS_LOST,
        None,
    )


async def test_a_silent_attempt_leaves_no_log_file_and_reads_as_empty(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    final = await run(process_runtime, tmp_path, recorder, ProcessSettings(["/bin/true"]))
    assert final.phase is Phase.SUCCEEDED
    assert not (tmp_path / "a1.log").exists()  # created at the first byte, and none came
    assert [c async for c in process_runtime.logs("a1")] == []
    async with asyncio.timeout(15):
        assert [c async for c in process_runtime.logs("a1", follow=True)] == []


async def test_the_log_file_appears_with_the_first_byte(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    # The child waits on a fifo until the test has seen that no file exists yet.
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    script = f"read line < '{fifo}'; echo hello"
    await process_runtime.start(make_spec(tmp_path, ProcessSettings(script, shell=True)), recorder)
    assert not (tmp_path / "a1.log").exists()
    await asyncio.to_thread(fifo.write_text, "go\n")
    assert await read_until(process_runtime, "a1", b"hello\n") == b"hello\n"
    assert (await finish(process_runtime, "a1")).phase is Phase.SUCCEEDED
    assert (tmp_path / "a1.log").read_bytes() == b"hello\n"
    assert (tmp_path / "a1.log").stat().st_mode & 0o777 == 0o600


async def test_an_older_file_at_the_log_path_never_shows_as_this_attempts_log(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    (tmp_path / "a1.log").write_text("output of an earlier job with the same name\n")
    await run(process_runtime, tmp_path, recorder, ProcessSettings(["/bin/true"]))
    assert (tmp_path / "a1.log").read_bytes() == b""


async def test_a_missing_log_directory_is_created(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    log_path = tmp_path / "job" / "target" / "a1.log"
    spec = make_spec(tmp_path, ProcessSettings(["/bin/true"]), log_path=log_path)
    await process_runtime.start(spec, recorder)
    assert (await finish(process_runtime, "a1")).phase is Phase.SUCCEEDED
    assert log_path.parent.is_dir()


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory this process cannot create files in: read-only by mode, or immutable
    (``chattr +i``) when running as root, whom modes do not stop."""
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o500)
        yield locked
        locked.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(locked)], check=False).returncode:
        pytest.skip("root, and no immutable directories here")
    try:
        yield locked
    finally:
        subprocess.run([chattr, "-i", str(locked)], check=True)


async def test_an_unwritable_log_directory_stops_the_attempt_before_it_runs(
    process_runtime: ProcessRuntime, tmp_path: Path, recorder: Recorder, unwritable_dir: Path
) -> None:
    marker = tmp_path / "ran"
    spec = make_spec(
        tmp_path, ProcessSettings(["touch", str(marker)]), log_path=unwritable_dir / "a1.log"
    )
    handle = await process_runtime.start(spec, recorder)
    assert handle.pid is None
    assert recorder.phases("a1") == [Phase.FAILED]
    final = recorder.check("a1")
    assert final.reason == Reason.LOG_UNAVAILABLE
    assert "cannot create log file" in final.message
    assert not marker.exists()
    assert not (unwritable_dir / "a1.log").exists()


async def test_a_log_that_cannot_be_created_at_the_first_byte_is_reported(
    process_runtime: ProcessRuntime,
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The check before the spawn passes; the disk fills up before the first byte arrives.
    def no_space(path: Path) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(logfile, "_open", no_space)
    final = await run(process_runtime, tmp_path, recorder, ProcessSettings(["printf", "12345"]))
    assert (final.phase, final.reason) == (Phase.SUCCEEDED, Reason.COMPLETED)
    assert final.log_dropped_bytes == 5
    assert "output dropped: cannot create log file" in final.message
    assert "No space left on device" in final.message
    assert not (tmp_path / "a1.log").exists()


async def test_exit_watching_when_the_kernel_refuses_pidfds(
    process_runtime: ProcessRuntime,
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An old kernel (ENOSYS) or a seccomp filter: a thread waits instead, same outcomes.
    def refused(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(os, "pidfd_open", refused)
    final = await run(process_runtime, tmp_path, recorder, ProcessSettings("exit 3", shell=True))
    assert final.exit_code == 3
    await process_runtime.start(
        make_spec(tmp_path, ProcessSettings(["sleep", "300"]), attempt_id="a2"), recorder
    )
    await process_runtime.cancel("a2", grace=5)
    assert (await finish(process_runtime, "a2")).signal_name == "SIGTERM"


async def test_without_epoll_the_loop_watches_pipes_and_pidfds(
    tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_fdwatch, "_HAS_EPOLL", False)
    runtime = ProcessRuntime(shutdown_grace=1.0)
    try:
        script = "echo out; echo err >&2; exit 5"
        final = await run(runtime, tmp_path, recorder, ProcessSettings(script, shell=True))
        await runtime.start(
            make_spec(tmp_path, ProcessSettings(["sleep", "300"]), attempt_id="a2"), recorder
        )
        await runtime.cancel("a2", grace=5)
        cancelled = await finish(runtime, "a2")
    finally:
        await runtime.aclose()
    assert final.exit_code == 5
    assert (tmp_path / "a1.log").read_text() == "out\nerr\n"
    assert (cancelled.phase, cancelled.signal_name) == (Phase.CANCELLED, "SIGTERM")


async def test_aclose_releases_the_epoll_set(tmp_path: Path, recorder: Recorder) -> None:
    runtime = ProcessRuntime()
    await run(runtime, tmp_path, recorder, ProcessSettings(["/bin/true"]))
    watcher = runtime._watcher
    assert isinstance(watcher, _fdwatch.EpollWatcher)
    await runtime.aclose()
    assert watcher.closed
    assert runtime._watcher is None

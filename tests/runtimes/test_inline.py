"""Tests of the inline runtime: async and sync callables, ctx, timeouts, cancels, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cronloop.api.phase import Phase
from cronloop.runtimes.base import AttemptExistsError, RuntimeClosedError
from cronloop.runtimes.inline import InlineRuntime
from cronloop.runtimes.report import AttemptReport, Reason
from cronloop.runtimes.spec import InlineSettings, ProcessSettings
from tests.runtimes import inline_jobs
from tests.runtimes.helpers import Recorder, finish, make_spec

JOBS = "tests.runtimes.inline_jobs"


async def run(
    runtime: InlineRuntime,
    tmp_path: Path,
    recorder: Recorder,
    name: str,
    kwargs: dict[str, object] | None = None,
    **overrides: object,
) -> AttemptReport:
    spec = make_spec(tmp_path, InlineSettings(f"{JOBS}:{name}", kwargs or {}), **overrides)
    await runtime.start(spec, recorder)
    await finish(runtime, spec.attempt_id, bound=1000.0)  # also long enough in fake time
    return recorder.check(spec.attempt_id)


def log_text(tmp_path: Path, attempt_id: str = "a1") -> str:
    return (tmp_path / f"{attempt_id}.log").read_text()


async def test_async_callable_gets_kwargs_and_ctx(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    final = await run(
        inline_runtime, tmp_path, recorder, "add", {"a": 2, "b": 3}, shard_index=7, attempt=3
    )
    assert recorder.phases("a1") == [Phase.RUNNING, Phase.SUCCEEDED]
    assert final.reason == Reason.COMPLETED
    assert final.pid is None
    assert log_text(tmp_path) == "sum 5 for eu attempt 3 shard 7\n"


async def test_sync_callable_runs_in_a_worker_thread_without_ctx(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    await run(inline_runtime, tmp_path, recorder, "in_thread")
    assert str(inline_jobs.SEEN["thread"]).startswith("cronloop-inline")
    await run(inline_runtime, tmp_path, recorder, "no_ctx", {"x": 9}, attempt_id="a2")
    assert inline_jobs.SEEN["x"] == 9


async def test_async_callable_object(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    assert (await run(inline_runtime, tmp_path, recorder, "async_object")).phase is Phase.SUCCEEDED
    assert inline_jobs.SEEN["async_call"] is True


async def test_demo_jobs_run(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    for i, name in enumerate(["heartbeat", "prepare", "report"]):
        spec = make_spec(
            tmp_path, InlineSettings(f"cronloop.demos.jobs:{name}"), attempt_id=f"d{i}"
        )
        await inline_runtime.start(spec, recorder)
        assert (await finish(inline_runtime, spec.attempt_id)).phase is Phase.SUCCEEDED
        assert "eu" in log_text(tmp_path, spec.attempt_id)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("boom", {"secret_kwarg": "hunter2"}, "ValueError: boom"),
        ("aboom", {}, "KeyError: 'missing'"),
        ("returns_coroutine", {}, "TypeError: a sync callable returned an awaitable"),
    ],
)
async def test_exception_fails_with_traceback_in_log(
    inline_runtime: InlineRuntime,
    tmp_path: Path,
    recorder: Recorder,
    name: str,
    kwargs: dict[str, object],
    message: str,
) -> None:
    final = await run(inline_runtime, tmp_path, recorder, name, kwargs)
    assert (final.phase, final.reason) == (Phase.FAILED, Reason.EXCEPTION)
    assert final.message.startswith(message)
    text = log_text(tmp_path)
    assert "Traceback (most recent call last)" in text
    assert message in text
    assert "hunter2" not in text  # arguments are never written


@pytest.mark.parametrize(
    ("name", "code", "phase", "exit_code"),
    [
        ("exits", 0, Phase.SUCCEEDED, 0),
        ("exits", 3, Phase.FAILED, 3),
        ("aexits", None, Phase.SUCCEEDED, None),
        ("aexits", "bad", Phase.FAILED, 1),
    ],
)
async def test_sys_exit_maps_to_an_exit_code(
    inline_runtime: InlineRuntime,
    tmp_path: Path,
    recorder: Recorder,
    name: str,
    code: object,
    phase: Phase,
    exit_code: int | None,
) -> None:
    final = await run(inline_runtime, tmp_path, recorder, name, {"code": code})
    assert final.phase is phase
    assert final.exit_code == (0 if code is None else exit_code)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.runtimes.no_such_module:f", "No module named 'tests.runtimes.no_such_module'"),
        (f"{JOBS}:no_such_function", "has no attribute 'no_such_function'"),
        (f"{JOBS}:NOT_CALLABLE", "int object is not callable"),
    ],
)
async def test_import_errors_fail_without_running(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder, target: str, message: str
) -> None:
    await inline_runtime.start(make_spec(tmp_path, InlineSettings(target)), recorder)
    final = recorder.check("a1")  # before start() returned
    assert recorder.phases("a1") == [Phase.FAILED]
    assert final.reason == Reason.IMPORT_ERROR
    assert f"cannot import {target!r}" in final.message
    assert message in final.message
    assert message in log_text(tmp_path)


async def test_wrong_kwargs_fail_with_invalid_arguments(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    final = await run(inline_runtime, tmp_path, recorder, "add", {"a": 1, "c": 2})
    assert recorder.phases("a1") == [Phase.FAILED]
    assert final.reason == Reason.INVALID_ARGUMENTS
    assert f"{JOBS}:add does not accept the step's kwargs" in final.message


@pytest.mark.looptime
async def test_async_timeout_cancels_the_task(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    loop = asyncio.get_running_loop()
    begin = loop.time()
    final = await run(inline_runtime, tmp_path, recorder, "sleep_forever", timeout=3.0)
    assert (final.phase, final.reason) == (Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED)
    assert final.message == "timeout of 3 s exceeded"
    # Fake time: the deadline, not earlier and not some later timer (looptime also counts
    # the little real time the loop spends busy, hence the upper margin).
    assert 3.0 <= loop.time() - begin < 3.5
    assert log_text(tmp_path).endswith("unwound\n")  # it ran its finally block


@pytest.mark.looptime
async def test_async_that_swallows_cancel_is_abandoned_after_the_grace(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    loop = asyncio.get_running_loop()
    begin = loop.time()
    final = await run(
        inline_runtime, tmp_path, recorder, "ignore_cancel", timeout=1.0, kill_grace=0.5
    )
    assert final.phase is Phase.TIMED_OUT
    assert 1.5 <= loop.time() - begin < 2.0  # the deadline plus the kill grace
    assert "outcome is discarded" in log_text(tmp_path)


async def test_sync_timeout_is_reported_at_the_deadline_and_the_thread_finishes(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    gate = "sync-timeout"
    # Real time (looptime does not jump while a worker thread is busy): a short deadline.
    final = await run(inline_runtime, tmp_path, recorder, "blocking", {"gate": gate}, timeout=0.2)
    assert (final.phase, final.reason) == (Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED)
    assert gate not in inline_jobs.SEEN  # still running: a thread cannot be killed
    inline_jobs.GATES[gate].set()
    # A bounded join of the worker thread (it does not need the loop to finish).
    assert inline_jobs.GATES[f"{gate}:done"].wait(15)
    assert inline_jobs.SEEN[gate] is True  # it could see it had been asked to stop


async def test_cancel_of_a_cooperative_sync_callable(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    spec = make_spec(tmp_path, InlineSettings(f"{JOBS}:cooperative", {"gate": "coop"}))
    await inline_runtime.start(spec, recorder)
    await inline_runtime.cancel("a1", grace=30, reason="Superseded")
    final = await finish(inline_runtime, "a1")
    assert (final.phase, final.reason) == (Phase.CANCELLED, "Superseded")
    text = log_text(tmp_path)
    assert "noticed the cancel" in text
    assert "AttemptCancelledError" in text
    assert "outcome is discarded" not in text  # it ended within the grace period


async def test_cancel_of_an_async_callable(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    await inline_runtime.start(
        make_spec(tmp_path, InlineSettings(f"{JOBS}:sleep_forever")), recorder
    )
    await inline_runtime.cancel("a1", grace=30)
    final = await finish(inline_runtime, "a1")
    assert (final.phase, final.reason) == (Phase.CANCELLED, Reason.CANCELLED_BY_USER)
    assert log_text(tmp_path).endswith("unwound\n")
    await inline_runtime.cancel("a1", grace=0)  # idempotent after the end
    assert recorder.check("a1") == final


@pytest.mark.looptime
async def test_aclose_cancels_running_attempts(tmp_path: Path, recorder: Recorder) -> None:
    runtime = InlineRuntime(shutdown_grace=2.0)
    await runtime.start(
        make_spec(tmp_path, InlineSettings(f"{JOBS}:sleep_forever"), attempt_id="x1"), recorder
    )
    await runtime.start(
        make_spec(tmp_path, InlineSettings(f"{JOBS}:ignore_cancel"), attempt_id="x2"), recorder
    )
    await runtime.aclose()
    for attempt_id in ("x1", "x2"):
        final = recorder.check(attempt_id)
        assert (final.phase, final.reason) == (Phase.CANCELLED, Reason.RUNTIME_SHUTDOWN)
    with pytest.raises(RuntimeClosedError):
        await runtime.start(
            make_spec(tmp_path, InlineSettings(f"{JOBS}:in_thread"), attempt_id="x3"), recorder
        )


async def test_cancel_needs_a_reason(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    await inline_runtime.start(
        make_spec(tmp_path, InlineSettings(f"{JOBS}:sleep_forever")), recorder
    )
    with pytest.raises(ValueError, match="cancel reason must be a non-empty"):
        await inline_runtime.cancel("a1", grace=1, reason="")
    await inline_runtime.cancel("a1", grace=1)
    assert (await finish(inline_runtime, "a1")).reason == Reason.CANCELLED_BY_USER


async def test_process_settings_are_refused(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    spec = make_spec(tmp_path, ProcessSettings(["/bin/true"]))
    with pytest.raises(ValueError, match=r"cannot run .* ProcessSettings"):
        await inline_runtime.start(spec, recorder)


async def test_follow_logs_of_an_inline_attempt(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    spec = make_spec(tmp_path, InlineSettings(f"{JOBS}:cooperative", {"gate": "follow"}))
    await inline_runtime.start(spec, recorder)
    received = b""
    async with asyncio.timeout(15):
        async for chunk in inline_runtime.logs("a1", follow=True):
            if not received:
                await inline_runtime.cancel("a1", grace=30)
            received += chunk
    assert b"noticed the cancel" in received
    assert received == (tmp_path / "a1.log").read_bytes()


async def test_an_attempt_id_is_started_again_only_by_another_session(
    inline_runtime: InlineRuntime, tmp_path: Path
) -> None:
    # A Job deleted and made again under its name names its attempts as before.
    first, second = Recorder(), Recorder()
    done = await run(inline_runtime, tmp_path, first, "add", {"a": 1, "b": 2})
    assert done.phase is Phase.SUCCEEDED
    spec = make_spec(tmp_path, InlineSettings(f"{JOBS}:add", {"a": 1, "b": 2}))
    with pytest.raises(AttemptExistsError, match="'a1' was already started"):
        await inline_runtime.start(spec, first)  # the same session: a double start
    again = make_spec(tmp_path, InlineSettings(f"{JOBS}:sleep_forever", {}), session="s2")
    await inline_runtime.start(again, second)
    with pytest.raises(AttemptExistsError, match="'a1' was already started"):
        await inline_runtime.start(make_spec(tmp_path, spec.settings, session="s3"), second)
    await inline_runtime.cancel("a1", grace=0)
    assert (await finish(inline_runtime, "a1")).phase is Phase.CANCELLED
    assert second.check("a1").phase is Phase.CANCELLED

"""The inline runtime's state that is created only when needed, and the paths that create it.

An inline attempt has no driver task, and its stop flag, log object and give-up timer exist
only once something uses them. These tests stop, follow and break attempts while that state
does not exist yet. The callables they run are defined here and run by name
(``tests.runtimes.test_inline_lazy_state:<name>``).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

from cronloop.api.phase import Phase
from cronloop.runtimes import inline
from cronloop.runtimes.inline import InlineRuntime
from cronloop.runtimes.report import AttemptReport, Reason
from cronloop.runtimes.spec import InlineSettings
from tests.runtimes.helpers import WAIT, Recorder, finish, make_spec

HERE = __name__
CALLED: dict[str, int] = {}
GATES: dict[str, threading.Event] = {}


async def counted() -> None:
    CALLED["counted"] = CALLED.get("counted", 0) + 1


async def sleeps() -> None:
    await asyncio.sleep(3600)


def blocks_without_ctx(gate: str) -> None:
    GATES[gate].wait(WAIT)


def settings(name: str, **kwargs: object) -> InlineSettings:
    return InlineSettings(f"{HERE}:{name}", kwargs)


async def test_stop_before_the_first_step_never_calls_the_function(
    inline_runtime: InlineRuntime, tmp_path: Path
) -> None:
    CALLED.pop("counted", None)
    seen: list[AttemptReport] = []
    await inline_runtime.start(make_spec(tmp_path, settings("counted")), seen.append)
    # With a plain callback neither call yields to the loop, so the work's task has not
    # taken its first step yet.
    await inline_runtime.cancel("a1", grace=30)
    final = await finish(inline_runtime, "a1")
    assert (final.phase, final.reason) == (Phase.CANCELLED, Reason.CANCELLED_BY_USER)
    assert [(r.seq, r.phase) for r in seen] == [(1, Phase.RUNNING), (2, Phase.CANCELLED)]
    assert "counted" not in CALLED
    assert "stopping (Cancelled: CancelledByUser)" in (tmp_path / "a1.log").read_text()


async def test_a_no_op_creates_no_log_file(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    await inline_runtime.start(make_spec(tmp_path, settings("counted")), recorder)
    assert recorder.phases("a1")[0] is Phase.RUNNING
    final = await finish(inline_runtime, "a1")
    assert final.phase is Phase.SUCCEEDED
    assert final.started_at is not None
    assert final.finished_at is not None
    assert final.started_at <= final.finished_at == final.reported_at
    assert not (tmp_path / "a1.log").exists()
    chunks = [chunk async for chunk in inline_runtime.logs("a1", follow=True)]
    assert chunks == []


async def test_cancel_of_a_sync_function_without_ctx_reports_after_the_grace(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    gate = GATES["no-ctx"] = threading.Event()
    try:
        spec = make_spec(tmp_path, settings("blocks_without_ctx", gate="no-ctx"))
        await inline_runtime.start(spec, recorder)
        await inline_runtime.cancel("a1", grace=0.05, reason="Superseded")
        final = await finish(inline_runtime, "a1")
        assert (final.phase, final.reason) == (Phase.CANCELLED, "Superseded")
        assert not gate.is_set()  # reported while the thread still runs
        assert "outcome is discarded" in (tmp_path / "a1.log").read_text()
    finally:
        gate.set()


async def test_cancel_of_a_sync_function_without_ctx_that_returns_in_the_grace(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    GATES["returns"] = threading.Event()
    await inline_runtime.start(
        make_spec(tmp_path, settings("blocks_without_ctx", gate="returns")), recorder
    )
    await inline_runtime.cancel("a1", grace=WAIT)
    GATES["returns"].set()
    final = await finish(inline_runtime, "a1")
    assert final.phase is Phase.CANCELLED  # stopping wins over its normal return
    assert "outcome is discarded" not in (tmp_path / "a1.log").read_text()


async def test_follow_the_log_of_an_attempt_that_has_no_log_yet(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    await inline_runtime.start(make_spec(tmp_path, settings("sleeps")), recorder)

    async def follow() -> bytes:
        received = b""
        async for chunk in inline_runtime.logs("a1", follow=True):
            received += chunk
        return received

    follower = asyncio.create_task(follow())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not follower.done()  # following a running attempt that has written nothing
    await inline_runtime.cancel("a1", grace=WAIT)
    async with asyncio.timeout(WAIT):
        received = await follower
    assert (await finish(inline_runtime, "a1")).phase is Phase.CANCELLED
    assert b"stopping (Cancelled: CancelledByUser)" in received
    assert received == (tmp_path / "a1.log").read_bytes()


@pytest.mark.looptime
async def test_swallowed_cancel_of_an_attempt_without_ctx(
    inline_runtime: InlineRuntime, tmp_path: Path, recorder: Recorder
) -> None:
    spec = make_spec(
        tmp_path, InlineSettings("tests.runtimes.inline_jobs:ignore_cancel"), kill_grace=0.5
    )
    await inline_runtime.start(spec, recorder)
    await asyncio.sleep(0)  # let it enter (and start swallowing)
    await inline_runtime.cancel("a1", grace=0.5)
    final = await finish(inline_runtime, "a1")
    assert final.phase is Phase.CANCELLED
    assert "outcome is discarded" in (tmp_path / "a1.log").read_text()


async def test_a_module_that_is_not_imported_yet_is_imported_off_the_loop(
    inline_runtime: InlineRuntime,
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "cronloop_test_fresh_module"
    (tmp_path / f"{name}.py").write_text(
        "import threading\nIMPORTED_IN = threading.current_thread().name\n"
        "async def run():\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    spec = make_spec(tmp_path, InlineSettings(f"{name}:run"))
    await inline_runtime.start(spec, recorder)
    assert recorder.phases("a1")[0] is Phase.RUNNING  # delivered before start() returned
    assert (await finish(inline_runtime, "a1")).phase is Phase.SUCCEEDED
    assert sys.modules[name].IMPORTED_IN.startswith("cronloop-inline")
    recorder.check("a1")


async def test_cancel_while_the_module_is_being_imported_waits_for_running(
    inline_runtime: InlineRuntime,
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "cronloop_test_slow_module"
    gate = GATES["import"] = threading.Event()
    (tmp_path / f"{name}.py").write_text(
        f"from {HERE} import GATES\nGATES['import'].wait({WAIT})\n"
        "async def run():\n    import asyncio\n    await asyncio.sleep(3600)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    start = asyncio.create_task(
        inline_runtime.start(make_spec(tmp_path, InlineSettings(f"{name}:run")), recorder)
    )
    for _ in range(3):
        await asyncio.sleep(0)
    assert not start.done()
    cancel = asyncio.create_task(inline_runtime.cancel("a1", grace=WAIT))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not cancel.done()  # waits for the start to finish
    gate.set()
    async with asyncio.timeout(WAIT):
        await start
        await cancel
    final = await finish(inline_runtime, "a1")
    assert recorder.phases("a1") == [Phase.RUNNING, Phase.CANCELLED]
    assert final.reason == Reason.CANCELLED_BY_USER


async def test_an_internal_error_at_start_is_reported_once(
    inline_runtime: InlineRuntime,
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(fn: object) -> object:
        raise RuntimeError("planner bug")

    monkeypatch.setattr(inline, "_plan", broken)
    await inline_runtime.start(make_spec(tmp_path, settings("counted")), recorder)
    final = recorder.check("a1")  # before start() returned
    assert (final.phase, final.reason) == (Phase.FAILED, "InternalError")
    assert final.message == "RuntimeError: planner bug"
    assert await finish(inline_runtime, "a1") == final
    assert "inline runtime failed while running attempt a1" in caplog.text


async def test_an_internal_error_when_settling_is_reported_once(
    inline_runtime: InlineRuntime,
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("outcome bug")

    monkeypatch.setattr(InlineRuntime, "_conclude", broken)
    await inline_runtime.start(make_spec(tmp_path, settings("counted")), recorder)
    final = await finish(inline_runtime, "a1")
    assert (final.phase, final.reason) == (Phase.FAILED, "InternalError")
    assert recorder.phases("a1") == [Phase.RUNNING, Phase.FAILED]
    recorder.check("a1")
    assert "outcome bug" in caplog.text

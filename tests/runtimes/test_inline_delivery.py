"""How the inline runtime delivers reports without a driver task: plain callbacks are called
directly, async ones from a task, and either way in order, one at a time, with the log
complete (closed) when the terminal report arrives."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cronloop.api.phase import Phase
from cronloop.runtimes.base import ReportCallback
from cronloop.runtimes.inline import AttemptContext, InlineRuntime
from cronloop.runtimes.report import AttemptReport, Reason
from cronloop.runtimes.spec import InlineSettings
from tests.runtimes.helpers import WAIT, Recorder, finish, make_spec

HERE = __name__


async def noop() -> None:
    pass


async def writes_async(ctx: AttemptContext) -> None:
    ctx.log("x" * 40)


def writes_sync(ctx: AttemptContext) -> None:
    ctx.log("x" * 40)


def noop_sync() -> None:
    pass


async def sleeps() -> None:
    await asyncio.sleep(3600)


async def test_async_callback_is_awaited_before_the_next_report(
    inline_runtime: InlineRuntime, tmp_path: Path
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
        inline_runtime.start(make_spec(tmp_path, InlineSettings(f"{HERE}:noop")), slow_callback)
    )
    async with asyncio.timeout(WAIT):
        await entered.wait()
    for _ in range(10):  # the no-op has long returned; its report waits for Running's
        await asyncio.sleep(0)
    assert [r.phase for r in seen] == [Phase.RUNNING]
    assert not start.done()  # start() returns only once Running was delivered
    release.set()
    async with asyncio.timeout(WAIT):
        await start
    await finish(inline_runtime, "a1")
    assert [(r.seq, r.phase) for r in seen] == [(1, Phase.RUNNING), (2, Phase.SUCCEEDED)]


async def test_cancelling_the_caller_of_start_does_not_cancel_the_delivery(
    inline_runtime: InlineRuntime, tmp_path: Path
) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()
    delivered: list[Phase] = []

    async def slow_callback(report: AttemptReport) -> None:
        if report.phase is Phase.RUNNING:
            entered.set()
            await release.wait()
        delivered.append(report.phase)

    start = asyncio.create_task(
        inline_runtime.start(make_spec(tmp_path, InlineSettings(f"{HERE}:noop")), slow_callback)
    )
    async with asyncio.timeout(WAIT):
        await entered.wait()
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    release.set()
    final = await finish(inline_runtime, "a1")
    assert final.phase is Phase.SUCCEEDED
    assert delivered == [Phase.RUNNING, Phase.SUCCEEDED]  # Running's callback ran to its end


async def test_a_waiter_giving_up_leaves_the_attempt_and_the_other_waiters(
    inline_runtime: InlineRuntime, tmp_path: Path
) -> None:
    gate = asyncio.Event()

    async def held(report: AttemptReport) -> None:
        if report.terminal:
            await gate.wait()

    await inline_runtime.start(make_spec(tmp_path, InlineSettings(f"{HERE}:noop")), held)
    quitter = asyncio.create_task(inline_runtime.wait("a1"))
    stayer = asyncio.create_task(inline_runtime.wait("a1"))
    await asyncio.sleep(0)  # both are waiting on the attempt now
    quitter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitter
    gate.set()
    async with asyncio.timeout(WAIT):
        final = await stayer
    assert final.phase is Phase.SUCCEEDED
    assert (await inline_runtime.wait("a1")) is final


def _sync_recorder(into: list[AttemptReport]) -> ReportCallback:
    return into.append


def _async_recorder(into: list[AttemptReport]) -> ReportCallback:
    async def record(report: AttemptReport) -> None:
        into.append(report)
        await asyncio.sleep(0)

    return record


def _changing_recorder(into: list[AttemptReport]) -> ReportCallback:
    """Plain for Running, async for the terminal report (a callback may change its mind)."""

    def record(report: AttemptReport) -> Awaitable[None] | None:
        into.append(report)
        return asyncio.sleep(0) if report.terminal else None

    return record


RECORDERS = [_sync_recorder, _async_recorder, _changing_recorder]


@pytest.mark.parametrize("make_callback", RECORDERS, ids=["plain", "async", "changing"])
@pytest.mark.parametrize("name", ["writes_async", "writes_sync"])
async def test_the_log_is_closed_when_the_terminal_report_arrives(
    inline_runtime: InlineRuntime,
    tmp_path: Path,
    name: str,
    make_callback: Callable[[list[AttemptReport]], ReportCallback],
) -> None:
    seen: list[AttemptReport] = []
    log_at_terminal: list[str] = []
    record = make_callback(seen)
    log_path = tmp_path / "a1.log"

    def callback(report: AttemptReport) -> Awaitable[None] | None:
        if report.terminal:
            log_at_terminal.append(log_path.read_text())
        return record(report)

    # The truncation marker is written when the log is closed, so it shows the close.
    spec = make_spec(tmp_path, InlineSettings(f"{HERE}:{name}"), log_limit=8)
    await inline_runtime.start(spec, callback)
    final = await finish(inline_runtime, "a1")
    assert final.phase is Phase.SUCCEEDED
    assert final.log_dropped_bytes == 33
    assert [r.seq for r in seen] == [1, 2]
    assert log_at_terminal == [log_path.read_text()]
    assert "log truncated: kept the first 8 bytes, dropped 33 more" in log_at_terminal[0]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["plain", "async"])
async def test_a_failing_callback_does_not_change_the_outcome(
    inline_runtime: InlineRuntime,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    asynchronous: bool,
) -> None:
    def broken(report: AttemptReport) -> None:
        raise RuntimeError("receiver is down")

    async def broken_async(report: AttemptReport) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("receiver is down")

    await inline_runtime.start(
        make_spec(tmp_path, InlineSettings(f"{HERE}:noop")),
        broken_async if asynchronous else broken,
    )
    assert (await finish(inline_runtime, "a1")).phase is Phase.SUCCEEDED
    assert "report callback failed for attempt a1 (seq 1, Running)" in caplog.text
    assert "report callback failed for attempt a1 (seq 2, Succeeded)" in caplog.text


async def test_many_attempts_seeded_mix_reports_are_ordered(
    tmp_path: Path, recorder: Recorder
) -> None:
    rng = random.Random(20261204)
    runtime = InlineRuntime(max_workers=4, shutdown_grace=1.0, retain_finished=1000)
    plain: list[AttemptReport] = []
    expected: dict[str, Phase] = {}
    callbacks: dict[str, ReportCallback] = {}
    try:
        specs = []
        for i in range(200):
            kind = rng.choice(["ok", "ok-sync", "fail", "cancel", "timeout"])
            name = {"ok": "noop", "ok-sync": "noop_sync", "fail": "missing"}.get(kind, "sleeps")
            spec = make_spec(
                tmp_path,
                InlineSettings(f"{HERE}:{name}"),
                attempt_id=f"m{i}",
                timeout=0.05 if kind == "timeout" else None,
                kill_grace=0.05,
            )
            expected[spec.attempt_id] = {
                "fail": Phase.FAILED,
                "cancel": Phase.CANCELLED,
                "timeout": Phase.TIMED_OUT,
            }.get(kind, Phase.SUCCEEDED)
            callbacks[spec.attempt_id] = recorder if rng.random() < 0.5 else plain.append
            specs.append(spec)
        for first in range(0, len(specs), 16):
            batch = specs[first : first + 16]
            await asyncio.gather(*(runtime.start(s, callbacks[s.attempt_id]) for s in batch))
            for spec in batch:
                if expected[spec.attempt_id] is Phase.CANCELLED:
                    await runtime.cancel(spec.attempt_id, grace=rng.choice([0.0, 1.0]))
        async with asyncio.timeout(WAIT):
            finals = [await runtime.wait(s.attempt_id) for s in specs]
    finally:
        await runtime.aclose()
    assert {f.attempt_id: f.phase for f in finals} == expected
    assert all(f.reason == Reason.IMPORT_ERROR for f in finals if f.phase is Phase.FAILED)
    for attempt_id, callback in callbacks.items():
        if callback is recorder:
            recorder.check(attempt_id)
        else:
            mine = [r for r in plain if r.attempt_id == attempt_id]
            assert [r.seq for r in mine] == list(range(1, len(mine) + 1))
            assert [r.terminal for r in mine] == [False] * (len(mine) - 1) + [True]

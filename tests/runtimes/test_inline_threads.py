"""How the inline runtime runs sync functions: a bounded number of runners on the pool's
threads take calls from one queue, and closing the runtime runs no queued call."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cronloop.api.phase import Phase
from cronloop.runtimes.inline import InlineRuntime, _InlineAttempt, _Outcome, _ThreadRunners
from cronloop.runtimes.report import Reason
from cronloop.runtimes.spec import InlineSettings
from tests.runtimes.helpers import WAIT, Recorder, finish, make_spec

HERE = __name__
GATES: dict[str, threading.Event] = {}
ENTERED: dict[str, threading.Event] = {}
RAN: list[str] = []


def waits(gate: str) -> str:
    RAN.append(gate)
    ENTERED[gate].set()
    GATES[gate].wait(WAIT)
    return gate


def gates(*names: str) -> None:
    RAN.clear()
    for name in names:
        GATES[name] = threading.Event()
        ENTERED[name] = threading.Event()


async def entered(name: str) -> None:
    assert await asyncio.to_thread(ENTERED[name].wait, WAIT)


class _ManualPool(concurrent.futures.Executor):
    """Records submissions; the test runs them when it wants to (on the loop's thread)."""

    def __init__(self) -> None:
        self.submitted: list[Callable[[], object]] = []

    def submit(
        self, fn: Callable[..., object], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        self.submitted.append(lambda: fn(*args, **kwargs))
        return concurrent.futures.Future()


async def _turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_call_queued_as_the_last_runner_leaves_is_not_stranded(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    pool = _ManualPool()
    done: list[tuple[str, _Outcome | None]] = []
    runners = _ThreadRunners(pool, 1)

    def attempt(attempt_id: str) -> _InlineAttempt:
        spec = make_spec(tmp_path, InlineSettings(f"{HERE}:waits"), attempt_id=attempt_id)
        return _InlineAttempt(spec, lambda report: None)

    def returns(value: str) -> _Outcome:
        return value, None

    def on_done(attempt: _InlineAttempt, outcome: _Outcome | None) -> None:
        done.append((attempt.attempt_id, outcome))

    runners.call(loop, attempt("c1"), (returns, ("one",), on_done))
    assert len(pool.submitted) == 1
    pool.submitted.pop()()  # the runner takes c1, finds the queue empty and leaves...
    runners.call(loop, attempt("c2"), (returns, ("two",), on_done))  # ...unheard of yet
    assert pool.submitted == []  # at the limit: the leaving runner still counts
    await _turn()  # the loop hears that the runner left, and starts one for c2
    assert len(pool.submitted) == 1
    pool.submitted.pop()()
    await _turn()
    assert done == [("c1", ("one", None)), ("c2", ("two", None))]
    assert pool.submitted == []


async def test_at_most_max_workers_run_and_the_rest_wait_their_turn(
    tmp_path: Path, recorder: Recorder
) -> None:
    runtime = InlineRuntime(max_workers=2, shutdown_grace=1.0)
    names = [f"turn{i}" for i in range(5)]
    gates(*names)
    try:
        for name in names:
            settings = InlineSettings(f"{HERE}:waits", {"gate": name})
            await runtime.start(make_spec(tmp_path, settings, attempt_id=name), recorder)
        await entered("turn0")
        await entered("turn1")
        assert sorted(RAN) == ["turn0", "turn1"]  # two threads, both busy: three calls wait
        for name in names:
            GATES[name].set()
        finals = [await finish(runtime, name) for name in names]
    finally:
        await runtime.aclose()
    assert [f.phase for f in finals] == [Phase.SUCCEEDED] * 5
    assert sorted(RAN) == names


async def test_closing_runs_no_queued_call(tmp_path: Path, recorder: Recorder) -> None:
    runtime = InlineRuntime(max_workers=1, shutdown_grace=0.0)
    gates("busy", "queued")
    try:
        for gate in ("busy", "queued"):
            spec = make_spec(
                tmp_path, InlineSettings(f"{HERE}:waits", {"gate": gate}), attempt_id=gate
            )
            await runtime.start(spec, recorder)
        await entered("busy")
    finally:
        await runtime.aclose()
    for gate in ("busy", "queued"):
        final = recorder.check(gate)
        assert (final.phase, final.reason) == (Phase.CANCELLED, Reason.RUNTIME_SHUTDOWN)
    assert RAN == ["busy"]
    GATES["busy"].set()
    GATES["queued"].set()
    # The busy call returns into a runner that stops; once the pool's threads have ended,
    # nothing is left that could run the queued call, which aclose() dropped.
    async with asyncio.timeout(WAIT):
        await asyncio.to_thread(runtime._pool.shutdown, wait=True)
    assert RAN == ["busy"]

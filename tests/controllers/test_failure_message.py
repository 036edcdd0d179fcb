"""A failed Job's message names the targets that failed and why.

The audit of ``cronloop up`` found failed runs ending ``SuccessPolicyUnmet: 0 of 1 targets
succeeded``: which target failed, and how, was only in ``describe``. The message now lists the
failed targets (at most three, then how many more) with their last attempt's message, or
their phase and reason; targets cancelled because the run ended are not failures.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cronloop.api import Job, Phase
from cronloop.runtimes import AttemptReport, ProcessRuntime, Reason

from .harness import running_stack
from .scripted import ScriptedRuntime
from .support import wait_started

SEVEN_TARGETS = """
apiVersion: cronloop.dev/v1
kind: Job
metadata: {name: fanned}
spec:
  targets: [a, b, c, d, e, f, g]
  main: {runtime: inline, callable: "cronloop.demos.jobs:report"}
"""

EXITS_3 = """
apiVersion: cronloop.dev/v1
kind: Job
metadata: {name: exits}
spec:
  targets: [us]
  main: {runtime: process, argv: [sh, -c, "exit 3"]}
"""

INLINE_EXIT = """
apiVersion: cronloop.dev/v1
kind: Job
metadata: {name: inline-exit}
spec:
  targets: [eu, us]
  main: {runtime: inline, callable: "tests.runtimes.inline_jobs:exits", kwargs: {code: 3}}
"""

#: An exception's message: only its first line, clipped, goes into the Job's.
LONG = "ValueError: " + "x" * 200


def _end(
    runtime: ScriptedRuntime,
    attempt_id: str,
    phase: Phase,
    reason: str,
    message: str = "",
    *,
    exit_code: int | None = None,
    signal: int | None = None,
) -> None:
    spec, callback = runtime.started[attempt_id]
    callback(
        AttemptReport(
            attempt_id=attempt_id,
            session=spec.session,
            seq=1,
            phase=phase,
            reason=reason,
            message=message,
            exit_code=exit_code,
            signal=signal,
            reported_at=datetime.now(UTC),
        )
    )


@pytest.mark.looptime(start=0)
async def test_message_lists_the_first_three_failures_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    runtime = ScriptedRuntime()
    async with running_stack(tmp_path, runtimes={"inline": runtime}) as stack:
        await stack.apply(SEVEN_TARGETS)
        await wait_started(runtime, 7)
        ids = {spec.target: ident for ident, (spec, _) in runtime.started.items()}
        # All in one go, so that one pass takes them all; g is still running then.
        _end(runtime, ids["a"], Phase.SUCCEEDED, Reason.COMPLETED, exit_code=0)
        _end(runtime, ids["b"], Phase.FAILED, Reason.EXCEPTION, f"{LONG}\nsecond line")
        _end(runtime, ids["c"], Phase.TIMED_OUT, Reason.DEADLINE_EXCEEDED)
        _end(runtime, ids["d"], Phase.FAILED, Reason.SIGNALED, signal=9)
        _end(runtime, ids["e"], Phase.FAILED, Reason.NON_ZERO_EXIT, "exited with code 3")
        _end(runtime, ids["f"], Phase.FAILED, Reason.NON_ZERO_EXIT, exit_code=1)
        job = await stack.wait_job("fanned", within=60)

    assert job.status.phase is Phase.FAILED
    assert job.status.reason == "SuccessPolicyUnmet"
    assert job.status.message == (
        f"1 of 7 targets succeeded; b: {LONG[:97]}..., c: TimedOut (DeadlineExceeded), "
        "d: killed by SIGKILL, and 2 more"
    )


@pytest.mark.looptime(start=0)
async def test_inline_exit_names_each_target(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        await stack.apply(INLINE_EXIT)
        job: Job = await stack.wait_job("inline-exit", within=60)
    assert (job.status.phase, job.status.reason) == (Phase.FAILED, "SuccessPolicyUnmet")
    assert job.status.message == "0 of 2 targets succeeded; eu: sys.exit(3), us: sys.exit(3)"


@pytest.mark.slow
async def test_failed_process_names_the_target_and_its_exit_code(tmp_path: Path) -> None:
    """A real process, real time: nothing here waits for time to pass, only for events."""
    process = ProcessRuntime(shutdown_grace=1.0, drain_timeout=1.0)
    async with running_stack(tmp_path, runtimes={"process": process}) as stack:
        await stack.apply(EXITS_3)
        job = await stack.wait_job("exits", within=30)
    assert (job.status.phase, job.status.reason) == (Phase.FAILED, "SuccessPolicyUnmet")
    assert job.status.message == "0 of 1 targets succeeded; us: exited with code 3"

"""``cronloop logs``: the latest run of each target (prepare and main), and attempt errors."""

from __future__ import annotations

from pathlib import Path

from cronloop.api import Attempt, Phase, StepName, parse_resource
from cronloop.controllers.objects import to_stored
from cronloop.store import Store
from tests.cli.conftest import Invoke, in_background
from tests.server.builders import add_subjob, job_body, set_subjob_status, step
from tests.server.live import LiveServer

Step = tuple[StepName, Phase, str | None]
"""An attempt as a test writes it: its step, its phase, and what its log holds (None: no
file yet)."""


def _attempts(live: LiveServer, job: str, target: str, steps: list[Step]) -> tuple[Attempt, ...]:
    attempts = []
    for number, (step_name, phase, text) in enumerate(steps, start=1):
        path = live.log_dir / job / f"{job}-{target}.{number}.{step_name.value}.log"
        if text is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
        attempts.append(
            Attempt(number=number, step=step_name, phase=phase, runtime={"logPath": str(path)})
        )
    return tuple(attempts)


def _seed(live: LiveServer, job: str, runs: dict[str, list[Step]]) -> None:
    """Store Job ``job`` (prepare and main steps) with one sub-job per target, holding the
    given attempts."""
    body = job_body(job, targets=list(runs))
    body["spec"].update(prepare=step(["echo", "prepare"]), main=step(["echo", "main"]))
    recorded = {target: _attempts(live, job, target, steps) for target, steps in runs.items()}

    async def create(store: Store) -> None:
        stored = await store.create(to_stored(parse_resource(body)))
        for target, attempts in recorded.items():
            await add_subjob(store, stored, target, recorded=attempts)

    live.call(create)


def _update(live: LiveServer, job: str, target: str, steps: list[Step], phase: Phase) -> None:
    """Write sub-job ``<job>-<target>``'s attempts and phase, as the Job controller would."""
    attempts = _attempts(live, job, target, steps)
    live.call(
        lambda store: set_subjob_status(store, f"{job}-{target}", attempts=attempts, phase=phase)
    )


P, M = StepName.PREPARE, StepName.MAIN
OK, FAILED, RUNNING = Phase.SUCCEEDED, Phase.FAILED, Phase.RUNNING


def test_logs_show_the_prepare_and_main_steps_of_the_latest_run(
    invoke: Invoke, live: LiveServer
) -> None:
    _seed(
        live,
        "report",
        {
            # prepare, a main that failed, and its retry: the run is prepare + the retry.
            "eu": [(P, OK, "preparing eu\n"), (M, FAILED, "eu try 1\n"), (M, OK, "eu try 2\n")],
            # still preparing: only the prepare step has run.
            "us": [(P, RUNNING, "preparing us\n")],
        },
    )
    one = invoke("logs", "report", "--target", "eu")
    assert one.exit_code == 0, one.output
    assert one.stdout == "preparing eu\neu try 2\n"
    every = invoke("logs", "report")
    assert every.stdout == "[eu] preparing eu\n[eu] eu try 2\n[us] preparing us\n"
    chosen = invoke("logs", "report", "--attempt", "2")
    assert chosen.stdout == "[eu] eu try 1\n"  # us has no attempt 2: left out


def test_an_attempt_no_target_has_is_an_error_with_or_without_target(
    invoke: Invoke, live: LiveServer
) -> None:
    _seed(live, "tmo", {"default": [(M, Phase.TIMED_OUT, "slow\n")]})
    expected = 'error: SubJob "tmo-default" has no attempt 9 (attempts: 1)\n'
    with_target = invoke("logs", "tmo", "--target", "default", "--attempt", "9")
    assert (with_target.exit_code, with_target.stderr) == (1, expected)
    without = invoke("logs", "tmo", "--attempt", "9")
    assert (without.exit_code, without.stderr) == (1, expected)
    assert without.stdout == ""

    _seed(live, "two", {"eu": [(M, OK, "a\n"), (M, OK, "b\n")], "us": [(M, OK, "c\n")]})
    several = invoke("logs", "two", "--attempt", "3")
    assert several.exit_code == 1
    assert several.stderr == 'error: Job "two" has no attempt 3 (attempts: eu: 1, 2; us: 1)\n'


def test_follow_goes_from_the_prepare_step_on_to_the_main_step(
    invoke: Invoke, live: LiveServer, tmp_path: Path
) -> None:
    _seed(live, "report", {"eu": [(P, RUNNING, "preparing\n")]})

    def run_the_steps() -> None:
        assert live.seen("/apis/cronloop.dev/v1/jobs/report/logs").wait(10)
        prepared = (P, OK, "preparing\nprepared\n")
        _update(live, "report", "eu", [prepared, (M, RUNNING, "main ")], Phase.RUNNING)
        _update(live, "report", "eu", [prepared, (M, OK, "main done\n")], Phase.SUCCEEDED)

    worker = in_background(run_the_steps)
    result = invoke("logs", "report", "--target", "eu", "-f")
    worker.join(10)
    assert result.exit_code == 0, result.output
    assert result.stdout == "preparing\nprepared\nmain done\n"

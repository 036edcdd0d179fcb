"""``trigger``, ``suspend``, ``resume``, ``cancel``, ``delete`` and ``logs``."""

from __future__ import annotations

from pathlib import Path

from cronloop.api import Job, Phase, load_resources
from cronloop.controllers.cronjob import CANCEL_ANNOTATION
from cronloop.controllers.objects import to_stored, typed
from cronloop.store import Store, StoredObject
from tests.cli.conftest import Invoke, in_background
from tests.cli.files import CRONJOB_YAML, JOB_YAML
from tests.server.builders import add_subjob, set_attempt_phase, set_job_status
from tests.server.live import LiveServer


def _seed(live: LiveServer, *texts: str) -> None:
    async def create(store: Store) -> None:
        for text in texts:
            for resource in load_resources(text):
                await store.create(to_stored(resource))

    live.call(create)


def _get(live: LiveServer, kind: str, name: str) -> StoredObject:
    async def get(store: Store) -> StoredObject:
        return await store.get(kind, name)

    return live.call(get)


def _jobs(live: LiveServer) -> list[str]:
    async def names(store: Store) -> list[str]:
        return [o.name for o in (await store.list("Job")).items]

    return live.call(names)


def test_trigger_creates_a_run(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, CRONJOB_YAML)
    result = invoke("trigger", "nightly")
    assert result.exit_code == 0, result.output
    (name,) = _jobs(live)
    assert name.startswith("nightly-manual-")
    assert result.stdout == f"job/{name} created (triggered cronjob/nightly)\n"


def test_trigger_wait_follows_the_run(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, CRONJOB_YAML)

    def finish() -> None:
        assert live.watch_requested.wait(10)
        (name,) = _jobs(live)
        live.call(lambda store: set_job_status(store, name, phase=Phase.SUCCEEDED))

    worker = in_background(finish)
    result = invoke("trigger", "nightly", "--wait")
    worker.join(10)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].endswith(" Succeeded")


def test_trigger_of_a_missing_cronjob_fails(invoke: Invoke) -> None:
    result = invoke("trigger", "ghost")
    assert result.exit_code == 1
    assert result.stderr == 'error: CronJob "ghost" not found\n'


def test_suspend_and_resume(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, CRONJOB_YAML)
    assert invoke("suspend", "nightly").stdout == "cronjob/nightly suspended\n"
    assert _get(live, "CronJob", "nightly").spec["suspend"] is True
    assert invoke("resume", "nightly").stdout == "cronjob/nightly resumed\n"
    assert _get(live, "CronJob", "nightly").spec["suspend"] is False


def test_cancel_sets_the_annotation(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, JOB_YAML)
    result = invoke("cancel", "adhoc")
    assert result.exit_code == 0, result.output
    assert result.stdout == "job/adhoc cancel requested\n"
    job = typed(_get(live, "Job", "adhoc"), Job)
    assert job.metadata.annotations[CANCEL_ANNOTATION] == "CancelledByUser"


def test_cancel_of_a_finished_job_fails(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, JOB_YAML)
    live.call(lambda store: set_job_status(store, "adhoc", phase=Phase.FAILED))
    result = invoke("cancel", "adhoc")
    assert result.exit_code == 1
    assert result.stderr == 'error: Job "adhoc" has already finished (Failed)\n'


def test_delete_cronjob_with_its_runs(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, CRONJOB_YAML, JOB_YAML)
    invoke("trigger", "nightly")
    result = invoke("delete", "cronjob", "nightly")
    assert result.exit_code == 0, result.output
    assert result.stdout == "cronjob/nightly deleted\n"
    assert _jobs(live) == ["adhoc"]
    assert invoke("delete", "job", "adhoc").stdout == "job/adhoc deleted\n"
    missing = invoke("delete", "job", "adhoc")
    assert missing.exit_code == 1
    assert missing.stderr == 'error: Job "adhoc" not found\n'


def _logs_setup(live: LiveServer, phase: Phase) -> tuple[Path, Path]:
    eu = live.log_dir / "adhoc" / "adhoc-eu.1.main.log"
    us = live.log_dir / "adhoc" / "adhoc-us.1.main.log"
    eu.parent.mkdir(parents=True, exist_ok=True)
    eu.write_text("hello from eu\n")
    us.write_text("hello from us\n")

    async def fan_out(store: Store) -> None:
        job = await store.get("Job", "adhoc")
        await add_subjob(store, job, "eu", attempts=[(phase, eu)])
        await add_subjob(store, job, "us", attempts=[(phase, us)])

    _seed(live, JOB_YAML)
    live.call(fan_out)
    return eu, us


def test_logs_of_one_target_and_of_all(invoke: Invoke, live: LiveServer) -> None:
    _logs_setup(live, Phase.SUCCEEDED)
    one = invoke("logs", "adhoc", "--target", "eu")
    assert one.exit_code == 0, one.output
    assert one.stdout == "hello from eu\n"
    every = invoke("logs", "adhoc")
    assert every.stdout == "[eu] hello from eu\n[us] hello from us\n"


def test_logs_errors_are_one_line(invoke: Invoke, live: LiveServer) -> None:
    _logs_setup(live, Phase.SUCCEEDED)
    result = invoke("logs", "adhoc", "--target", "ap")
    assert result.exit_code == 1
    assert result.stderr == "error: Job \"adhoc\" has no target 'ap' (targets: eu, us)\n"
    result = invoke("logs", "adhoc", "--target", "eu", "--attempt", "2")
    assert result.stderr == 'error: SubJob "adhoc-eu" has no attempt 2 (attempts: 1)\n'


def test_logs_follow_until_the_attempt_ends(invoke: Invoke, live: LiveServer) -> None:
    eu, _ = _logs_setup(live, Phase.RUNNING)

    def finish() -> None:
        assert live.seen("/apis/cronloop.dev/v1/jobs/adhoc/logs").wait(10)
        with eu.open("a") as file:
            file.write("more from eu\n")
        live.call(lambda store: set_attempt_phase(store, "adhoc-eu", 1, Phase.SUCCEEDED))

    worker = in_background(finish)
    result = invoke("logs", "adhoc", "--target", "eu", "-f")
    worker.join(10)
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello from eu\nmore from eu\n"

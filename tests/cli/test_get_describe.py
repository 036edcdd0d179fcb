"""``get`` (tables, wide, YAML, JSON, watch) and ``describe``."""

from __future__ import annotations

import json

import yaml

from cronloop.api import Phase, PhaseCounts, load_resources, parse_resource
from cronloop.controllers.objects import to_stored
from cronloop.store import Store
from tests.cli.conftest import Invoke, in_background
from tests.cli.files import CRONJOB_YAML, JOB_YAML
from tests.server.builders import add_subjob, set_job_status
from tests.server.live import LiveServer


def _seed(live: LiveServer, *texts: str) -> None:
    async def create(store: Store) -> None:
        for text in texts:
            for resource in load_resources(text):
                await store.create(to_stored(resource))

    live.call(create)


def _with_subjobs(live: LiveServer) -> None:
    log = live.log_dir / "adhoc" / "eu.1.log"

    async def fan_out(store: Store) -> None:
        job = await store.get("Job", "adhoc")
        await add_subjob(store, job, "eu", attempts=[(Phase.FAILED, log), (Phase.SUCCEEDED, log)])
        await add_subjob(store, job, "us", attempts=[(Phase.RUNNING, log)])

    live.call(fan_out)
    live.call(
        lambda store: set_job_status(
            store, "adhoc", phase=Phase.RUNNING, counts=PhaseCounts(succeeded=1, running=1)
        )
    )


def test_get_cronjobs_table(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, CRONJOB_YAML)
    result = invoke("get", "cronjobs")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.strip().splitlines()
    assert header.split() == [
        "NAME",
        "SCHEDULE",
        "TZ",
        "SUSPEND",
        "ACTIVE",
        "LAST-SCHEDULE",
        "NEXT",
        "AGE",
    ]
    assert row.split()[:8] == ["nightly", "0", "3", "*", "*", "*", "Europe/Paris", "False"]
    assert "in " in row  # NEXT is a time to come


def test_get_jobs_table_and_wide(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, JOB_YAML)
    _with_subjobs(live)
    result = invoke("get", "jobs")
    header, row = result.stdout.strip().splitlines()
    assert header.split() == [
        "NAME",
        "PHASE",
        "TARGETS",
        "CRONJOB",
        "SCHEDULED",
        "STARTED",
        "DURATION",
        "AGE",
    ]
    assert row.split()[:4] == ["adhoc", "Running", "1/2", "<none>"]
    wide = invoke("get", "job", "-o", "wide")
    assert wide.stdout.splitlines()[0].split()[-2:] == ["REASON", "MESSAGE"]


def test_get_subjobs_table(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, JOB_YAML)
    _with_subjobs(live)
    lines = invoke("get", "sj").stdout.strip().splitlines()
    assert lines[0].split() == ["NAME", "JOB", "TARGET", "PHASE", "ATTEMPTS", "EXIT", "AGE"]
    assert lines[1].split()[:5] == ["adhoc-eu", "adhoc", "eu", "Succeeded", "2"]
    assert lines[2].split()[:5] == ["adhoc-us", "adhoc", "us", "Running", "1"]


def test_get_one_as_yaml_round_trips_with_masked_env(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, CRONJOB_YAML)
    result = invoke("get", "cronjob", "nightly", "-o", "yaml")
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.stdout
    (cronjob,) = load_resources(result.stdout)
    assert cronjob.metadata.name == "nightly"
    assert yaml.safe_load(result.stdout)["spec"]["jobTemplate"]["main"]["env"] == {
        "DB_PASSWORD": "***"
    }


def test_get_all_as_json(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, JOB_YAML, JOB_YAML.replace("name: adhoc", "name: other"))
    items = json.loads(invoke("get", "jobs", "-o", "json").stdout)
    assert [parse_resource(i).metadata.name for i in items] == ["adhoc", "other"]


def test_get_with_a_selector(invoke: Invoke, live: LiveServer) -> None:
    _seed(
        live,
        CRONJOB_YAML,
        CRONJOB_YAML.replace("name: nightly", "name: hourly").replace("team: ops", "team: data"),
    )
    lines = invoke("get", "cronjobs", "-l", "team=data").stdout.strip().splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["hourly"]


def test_get_nothing_says_so(invoke: Invoke) -> None:
    result = invoke("get", "jobs")
    assert result.exit_code == 0
    assert result.stdout == "No jobs found.\n"


def test_get_bad_usage_exits_2(invoke: Invoke) -> None:
    unknown = invoke("get", "pods")
    assert unknown.exit_code == 2
    assert "'pods' is not a resource type here" in unknown.output
    bad_output = invoke("get", "jobs", "-o", "xml")
    assert bad_output.exit_code == 2
    assert "'xml' is not an output format" in bad_output.output


def test_get_missing_object_is_one_error_line(invoke: Invoke) -> None:
    result = invoke("get", "job", "ghost")
    assert result.exit_code == 1
    assert result.stderr == 'error: Job "ghost" not found\n'


def test_get_watch_prints_changes(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, JOB_YAML)

    def change() -> None:
        assert live.watch_requested.wait(10)
        live.call(lambda store: set_job_status(store, "adhoc", phase=Phase.RUNNING))

    worker = in_background(change)
    result = invoke("get", "jobs", "adhoc", "-w", "--timeout", "3")
    worker.join(10)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[0] == "NAME"
    assert lines[1].split()[:2] == ["adhoc", "Pending"]
    assert lines[2].split()[:3] == ["MODIFIED", "adhoc", "Running"]


def test_describe_job_shows_subjobs_and_attempts(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, JOB_YAML)
    _with_subjobs(live)
    result = invoke("describe", "job", "adhoc")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in (
        "Name:",
        "adhoc",
        "Targets:",
        "eu, us",
        "Main:",
        "process: echo hi",
        "Phase:",
        "Running",
        "1 Running, 1 Succeeded",
        "eu: Succeeded",
        "us: Running",
    ):
        assert expected in out, expected
    assert out.count("STEP") == 2  # one attempts table per sub-job
    assert "Failed" in out  # eu's first attempt


def test_describe_cronjob_shows_spec_status_and_runs(invoke: Invoke, live: LiveServer) -> None:
    _seed(live, CRONJOB_YAML)
    assert invoke("trigger", "nightly").exit_code == 0
    result = invoke("describe", "cj", "nightly")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in (
        "0 3 * * * (Europe/Paris)",
        "AtLeastOnce",
        "env: DB_PASSWORD",
        "Runs:",
        "nightly-manual-",
    ):
        assert expected in out, expected
    assert "hunter2" not in out


def test_describe_refuses_subjobs(invoke: Invoke) -> None:
    result = invoke("describe", "subjob", "x")
    assert result.exit_code == 2

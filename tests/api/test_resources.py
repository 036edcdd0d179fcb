"""Resource types: loading from YAML, validation errors that name the field, dumping back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydantic
import pytest

from cronloop.api.cronjob import CatchUp, CronJob, Guarantee, run_name
from cronloop.api.job import (
    InlineStep,
    Job,
    PhaseCounts,
    ProcessStep,
    RetryPolicy,
    SuccessMode,
    Targets,
    subjob_name,
)
from cronloop.api.meta import ObjectMeta
from cronloop.api.phase import Phase
from cronloop.api.resource import ResourceError, dump, dump_yaml, load_resources, parse_resource
from cronloop.api.subjob import Attempt, StepName, SubJob, SubJobStatus

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))

CRONJOB = """\
apiVersion: cronloop.dev/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "{schedule}"
  jobTemplate:
    main:
      runtime: inline
      callable: "pkg.mod:fn"
"""

JOB = """\
apiVersion: cronloop.dev/v1
kind: Job
metadata:
  name: {name}
spec:
{spec}
"""


def job(spec: str, name: str = "run") -> str:
    return JOB.format(name=name, spec="\n".join("  " + line for line in spec.splitlines()))


def error_of(text: str, source: str = "<string>") -> str:
    with pytest.raises(ResourceError) as info:
        load_resources(text, source=source)
    return str(info.value)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_loads_and_round_trips(path: Path) -> None:
    resources = load_resources(path.read_text(), source=str(path))
    assert resources
    assert load_resources(dump_yaml(resources)) == resources


def test_examples_cover_the_documented_cases() -> None:
    by_name = {
        r.metadata.name: r for p in EXAMPLES for r in load_resources(p.read_text(), source=str(p))
    }
    heartbeat = by_name["heartbeat"]
    assert isinstance(heartbeat, CronJob)
    assert heartbeat.spec.parsed_schedule().interval == timedelta(seconds=10)
    assert isinstance(heartbeat.spec.job_template.main, InlineStep)
    report = by_name["regional-report"]
    assert isinstance(report, CronJob)
    assert report.spec.job_template.targets.resolve() == ("eu", "us", "ap")
    assert isinstance(report.spec.job_template.prepare, ProcessStep)
    sharded = by_name["sharded-reindex"]
    assert isinstance(sharded, CronJob)
    assert sharded.spec.job_template.targets.shards == 4
    sydney = by_name["nightly-sydney"]
    assert isinstance(sydney, CronJob)
    assert sydney.spec.time_zone == "Australia/Sydney"
    assert sydney.spec.catch_up is CatchUp.LATEST


def test_the_documented_schedule_error() -> None:
    assert error_of(CRONJOB.format(schedule="61 * * * *"), "examples/nightly.yaml") == (
        'examples/nightly.yaml: CronJob "nightly": spec.schedule: invalid cron expression '
        "'61 * * * *' (minute must be 0-59, got 61)"
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("  schedule:", "  colour: red\n  schedule:"),
            'CronJob "nightly": spec.colour: unknown field',
        ),
        (
            ("  schedule:", "  timeZone: Mars/Base\n  schedule:"),
            "spec.timeZone: unknown time zone 'Mars/Base'",
        ),
        (
            ("  schedule:", "  catchUp: Sometimes\n  schedule:"),
            "spec.catchUp: must be 'None', 'Latest' or 'All'",
        ),
        (("  schedule:", "  guarantee: ExactlyOnce\n  schedule:"), "spec.guarantee: must be"),
        (
            ("  schedule:", "  maxCatchUpRuns: 0\n  schedule:"),
            "spec.maxCatchUpRuns: must be greater than or equal to 1",
        ),
        (
            ("  schedule:", "  startingDeadlineSeconds: 0\n  schedule:"),
            "spec.startingDeadlineSeconds:",
        ),
        (
            ("runtime: inline", "runtime: docker"),
            "spec.jobTemplate.main: runtime must be one of inline, process (got 'docker')",
        ),
        (
            ('callable: "pkg.mod:fn"', "callable: nope"),
            "spec.jobTemplate.main: callable must look like 'package.module:function'",
        ),
        (
            ("name: nightly", "name: Nightly"),
            "metadata.name: name 'Nightly' must consist of lower-case letters",
        ),
        (("name: nightly", "name: " + "n" * 53), "metadata.name: name '" + "n" * 53),
        (
            ("apiVersion: cronloop.dev/v1", "apiVersion: batch/v1"),
            "apiVersion: must be 'cronloop.dev/v1'",
        ),
        (
            ("  jobTemplate:\n", "  jobTemplate:\n    mian: 1\n"),
            "spec.jobTemplate.mian: unknown field",
        ),
    ],
)
def test_cronjob_errors_name_the_field(edit: tuple[str, str], expected: str) -> None:
    text = CRONJOB.format(schedule="0 3 * * *").replace(*edit, 1)
    assert expected in error_of(text)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "main: {runtime: process, command: ls}",
            "command strings run in a shell and require shell: true",
        ),
        ("main: {runtime: process, argv: [ls], shell: true}", "shell: true requires command"),
        ("main: {runtime: process, argv: [ls], command: ls, shell: true}", "exactly one of argv"),
        ("main: {runtime: process, argv: []}", "argv must be a non-empty list"),
        (
            "main: {runtime: process, argv: [ls], env: {CRONLOOP_JOB: x}}",
            "env: 'CRONLOOP_JOB' is reserved",
        ),
        (
            "main: {runtime: process, argv: [ls], env: {'1X': x}}",
            "env: '1X' is not a valid variable name",
        ),
        (
            "main: {runtime: process, argv: [ls], logLimitBytes: 0}",
            "spec.main.logLimitBytes: must be greater than or equal to 1",
        ),
        (
            "main: {runtime: inline, callable: 'a:b', kwargs: {ctx: 1}}",
            "kwargs may not contain 'ctx'",
        ),
        (
            "main: {runtime: inline, callable: 'a:b'}\ntargets: [eu, us, eu]",
            "spec.targets.names: target names must be unique (repeated: eu)",
        ),
        (
            "main: {runtime: inline, callable: 'a:b'}\ntargets: [EU]",
            "spec.targets.names[0]: name 'EU'",
        ),
        (
            "main: {runtime: inline, callable: 'a:b'}\ntargets: {shards: 2, names: [a]}",
            "exactly one of names, shards or selector is required (got names, shards)",
        ),
        (
            "main: {runtime: inline, callable: 'a:b'}\ntargets: {}",
            "exactly one of names, shards or selector is required",
        ),
        (
            "main: {runtime: inline, callable: 'a:b'}\ntargets: {shards: 0}",
            "spec.targets.shards: must be greater than or equal to 1",
        ),
        (
            (
                "main: {runtime: inline, callable: 'a:b'}\n"
                "targets: {selector: {matchLabels: {'bad key!': x}}}"
            ),
            "label key 'bad key!' is not a valid label key",
        ),
        (
            "main: {runtime: inline, callable: 'a:b'}\ntargets: {selector: {matchLabels: {}}}",
            "spec.targets.selector.matchLabels",
        ),
        (
            (
                "main: {runtime: inline, callable: 'a:b'}\n"
                "retries: {backoffSeconds: 10, maxBackoffSeconds: 5}"
            ),
            "spec.retries.maxBackoffSeconds: must be at least backoffSeconds (10), got 5",
        ),
        (
            "main: {runtime: inline, callable: 'a:b'}\nsuccessPolicy: {mode: AtLeast}",
            "spec.successPolicy.n: required when mode is AtLeast",
        ),
        (
            "main: {runtime: inline, callable: 'a:b'}\nsuccessPolicy: {mode: All, n: 2}",
            "spec.successPolicy.n: only allowed when mode is AtLeast",
        ),
        (
            (
                "main: {runtime: inline, callable: 'a:b'}\n"
                "targets: [a, b]\nsuccessPolicy: {mode: AtLeast, n: 3}"
            ),
            "spec.successPolicy.n: must not exceed the number of targets (2), got 3",
        ),
        (
            "main: {runtime: inline, callable: 'a:b'}\ntimeoutSeconds: 0",
            "spec.timeoutSeconds: must be greater than 0",
        ),
        ("prepare: {runtime: inline, callable: 'a:b'}", "spec.main: required field is missing"),
    ],
)
def test_job_errors_name_the_field(spec: str, expected: str) -> None:
    message = error_of(job(spec))
    assert message.startswith('<string>: Job "run": ')
    assert expected in message


def test_job_names_are_labels_but_subjob_names_may_be_subdomains() -> None:
    assert "name 'a.b' must consist of lower-case letters, digits and '-'" in error_of(
        job("main: {runtime: inline, callable: 'a:b'}", name="a.b")
    )
    sub = parse_resource(
        {
            "kind": "SubJob",
            "metadata": {"name": "nightly-1767225600.eu"},
            "spec": {
                "job": {"name": "nightly-1767225600"},
                "target": "eu",
                "main": {"runtime": "inline", "callable": "a:b"},
            },
        }
    )
    assert isinstance(sub, SubJob)


def test_document_errors() -> None:
    assert (
        error_of("kind: Pod\n")
        == "<string>: kind: unknown kind 'Pod' (expected one of CronJob, Job, SubJob)"
    )
    assert error_of("metadata: {name: x}\n").endswith(
        "kind: required field is missing (expected one of CronJob, Job, SubJob)"
    )
    assert error_of("- a\n") == "<string>: expected a mapping, got list"
    assert "line 2, column 1: invalid YAML" in error_of("a: [\n")
    assert "duplicate key 'kind'" in error_of("kind: Job\nkind: Job\n")
    two = job("main: {runtime: inline, callable: 'a:b'}") + "---\n" + job("main: {}", name="second")
    assert error_of(two, "x.yaml").startswith(
        'x.yaml (document 2): Job "second": spec.main: runtime is required'
    )
    assert error_of("kind: Job\nmetadata: {}\nspec: {}\n").startswith("<string>: Job (unnamed): ")


def test_multiple_problems_are_all_reported() -> None:
    with pytest.raises(ResourceError) as info:
        load_resources(job("main: {runtime: inline, callable: 'a:b'}\ncolour: red\nsize: 3"))
    assert [p for p, _ in info.value.problems] == ["spec.colour", "spec.size"]
    assert len(str(info.value).splitlines()) == 2


def test_empty_documents_are_skipped() -> None:
    text = "---\n" + job("main: {runtime: inline, callable: 'a:b'}") + "---\n---\n"
    assert [r.metadata.name for r in load_resources(text)] == ["run"]
    assert load_resources("") == []


def test_dump_uses_camel_case_and_round_trips() -> None:
    (cj,) = load_resources(CRONJOB.format(schedule="@every 1h30m"))
    data = dump(cj)
    assert data["apiVersion"] == "cronloop.dev/v1"
    assert data["spec"]["jobTemplate"]["successPolicy"] == {"mode": "All"}
    assert "startingDeadlineSeconds" not in data["spec"]  # unset optional fields are left out
    assert parse_resource(data) == cj


def test_defaults() -> None:
    (cj,) = load_resources(CRONJOB.format(schedule="0 3 * * *"))
    assert isinstance(cj, CronJob)
    spec = cj.spec
    assert (spec.time_zone, spec.catch_up, spec.guarantee) == (
        "UTC",
        CatchUp.LATEST,
        Guarantee.AT_LEAST_ONCE,
    )
    assert (spec.max_catch_up_runs, spec.misfire_threshold_seconds) == (100, 60)
    assert (spec.successful_jobs_history_limit, spec.failed_jobs_history_limit) == (3, 1)
    assert spec.job_template.targets.resolve() == ("default",)
    assert spec.job_template.success_policy.mode is SuccessMode.ALL
    assert cj.status.started_runs == 0
    assert cj.status.active == ()
    with pytest.raises(pydantic.ValidationError):
        cj.spec.suspend = True


def test_parsed_schedule_uses_the_zone() -> None:
    (cj,) = load_resources(
        CRONJOB.format(schedule="30 2 * * *").replace(
            "  schedule:", "  timeZone: America/New_York\n  schedule:"
        )
    )
    assert isinstance(cj, CronJob)
    schedule = cj.spec.parsed_schedule()
    assert schedule.next_after(datetime(2026, 3, 7, 12, tzinfo=UTC)) == datetime(
        2026, 3, 8, 7, tzinfo=UTC
    )


def test_metadata_validation() -> None:
    meta = ObjectMeta.model_validate(
        {
            "name": "a",
            "resourceVersion": 7,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app.kubernetes.io/name": "x"},
        }
    )
    assert meta.resource_version == 7
    assert meta.creation_timestamp == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(pydantic.ValidationError, match="timestamp must carry a time zone"):
        ObjectMeta.model_validate({"name": "a", "creationTimestamp": "2026-01-01T00:00:00"})
    with pytest.raises(pydantic.ValidationError, match="label 'a' has an invalid value"):
        ObjectMeta(name="a", labels={"a": "-bad-"})
    with pytest.raises(pydantic.ValidationError, match="at most 253"):
        ObjectMeta(name="a" * 254)


def test_retry_delay_is_exponential_and_capped() -> None:
    retries = RetryPolicy(limit=5, backoff_seconds=10, max_backoff_seconds=60)
    assert [retries.delay(k).total_seconds() for k in range(1, 6)] == [10, 20, 40, 60, 60]
    assert retries.delay(10_000) == timedelta(seconds=60)
    with pytest.raises(ValueError, match="retry must be >= 1"):
        retries.delay(0)


def test_targets_and_names() -> None:
    assert Targets.model_validate(["eu", "us"]).resolve() == ("eu", "us")
    assert Targets(shards=3).resolve() == ("shard-0", "shard-1", "shard-2")
    selector = Targets.model_validate({"selector": {"matchLabels": {"region": "eu"}}})
    assert selector.count is None
    with pytest.raises(ValueError, match="resolved against agents at run time"):
        selector.resolve()
    assert subjob_name("nightly-1767225600", "eu") == "nightly-1767225600-eu"
    assert run_name("nightly", datetime(2026, 1, 1, tzinfo=UTC)) == "nightly-1767225600"
    with pytest.raises(ValueError, match="timezone-aware"):
        run_name("nightly", datetime(2026, 1, 1))


def test_process_step_effective_argv() -> None:
    shell = ProcessStep(runtime="process", command="echo $HOME", shell=True)
    assert shell.effective_argv == ("/bin/sh", "-c", "echo $HOME")
    assert ProcessStep(runtime="process", argv=("ls", "-l")).effective_argv == ("ls", "-l")


def test_phase_counts() -> None:
    counts = PhaseCounts.of([Phase.RUNNING, Phase.SUCCEEDED, Phase.SUCCEEDED, Phase.TIMED_OUT])
    assert (counts.running, counts.succeeded, counts.timed_out, counts.total) == (1, 2, 1, 4)
    assert counts.get(Phase.SUCCEEDED) == 2
    assert PhaseCounts.model_validate({"timedOut": 3}).timed_out == 3


def test_subjob_report_ordering() -> None:
    status = SubJobStatus(session_id="s2", report_sequence=4)
    assert status.is_stale_report("s2", 4)
    assert status.is_stale_report("s2", 3)
    assert not status.is_stale_report("s2", 5)
    assert status.is_stale_report("s1", 99)  # a report from an older attempt's session
    assert SubJobStatus().is_stale_report("s1", 1)  # no attempt started yet


def test_attempt_validation() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    attempt = Attempt(number=1, step=StepName.MAIN, start_time=start, runtime={"pid": 42})
    assert attempt.runtime == {"pid": 42}
    with pytest.raises(pydantic.ValidationError, match="finishTime must not be before startTime"):
        Attempt(
            number=1, step=StepName.MAIN, start_time=start, finish_time=start - timedelta(seconds=1)
        )
    with pytest.raises(pydantic.ValidationError, match="distinct, increasing numbers"):
        SubJobStatus(
            attempts=(Attempt(number=2, step=StepName.MAIN), Attempt(number=1, step=StepName.MAIN))
        )


def test_job_status_for_cron_runs() -> None:
    data = {
        "kind": "Job",
        "metadata": {"name": "nightly-1767225600"},
        "spec": {"main": {"runtime": "inline", "callable": "a:b"}},
        "status": {
            "phase": "Running",
            "scheduledTime": "2026-01-01T00:00:00Z",
            "cronJob": {"name": "nightly", "uid": "u1"},
            "counts": {"running": 1},
        },
    }
    run = parse_resource(data)
    assert isinstance(run, Job)
    assert run.status.phase is Phase.RUNNING
    assert run.status.cron_job is not None
    assert run.status.cron_job.name == "nightly"
    assert "phase: must be 'Pending'" in error_of(
        "kind: Job\nmetadata: {name: a}\n"
        "spec: {main: {runtime: inline, callable: 'a:b'}}\nstatus: {phase: Done}\n"
    )

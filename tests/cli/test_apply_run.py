"""``apply`` and ``run``: local validation first, then the server's answer, one line per object."""

from __future__ import annotations

from pathlib import Path

from cronloop.api import Phase, PhaseCounts
from cronloop.store import Store, StoredObject
from tests.cli.conftest import Invoke, in_background
from tests.cli.files import CRONJOB_YAML, JOB_YAML
from tests.server.builders import set_job_status
from tests.server.live import LiveServer


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _names(live: LiveServer, kind: str) -> list[str]:
    async def names(store: Store) -> list[str]:
        return [o.name for o in (await store.list(kind)).items]

    return live.call(names)


def test_apply_creates_then_reports_unchanged_and_configured(
    invoke: Invoke, live: LiveServer, tmp_path: Path
) -> None:
    path = _write(tmp_path, "nightly.yaml", CRONJOB_YAML)
    first = invoke("apply", "-f", str(path))
    assert first.exit_code == 0, first.output
    assert first.stdout == "cronjob/nightly created\n"
    assert invoke("apply", "-f", str(path)).stdout == "cronjob/nightly unchanged\n"
    path.write_text(CRONJOB_YAML.replace("0 3 * * *", "*/5 * * * *"))
    assert invoke("apply", "-f", str(path)).stdout == "cronjob/nightly configured\n"

    async def stored(store: Store) -> StoredObject:
        return await store.get("CronJob", "nightly")

    obj = live.call(stored)
    assert obj.spec["schedule"] == "*/5 * * * *"
    assert obj.spec["jobTemplate"]["main"]["env"] == {"DB_PASSWORD": "hunter2"}


def test_apply_a_directory_applies_every_yaml_file(
    invoke: Invoke, live: LiveServer, tmp_path: Path
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    _write(specs, "a.yaml", CRONJOB_YAML)
    _write(specs, "b.yml", JOB_YAML)
    _write(specs, "notes.txt", "not a spec")
    result = invoke("apply", "-f", str(specs))
    assert result.exit_code == 0, result.output
    assert result.stdout == "cronjob/nightly created\njob/adhoc created\n"
    assert _names(live, "Job") == ["adhoc"]


def test_apply_refuses_an_invalid_file_before_sending_anything(
    invoke: Invoke, live: LiveServer, tmp_path: Path
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    _write(specs, "a.yaml", JOB_YAML)
    bad = _write(specs, "b.yaml", CRONJOB_YAML.replace("0 3 * * *", "0 3 * *"))
    result = invoke("apply", "-f", str(specs))
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f'error: {bad}: CronJob "nightly": spec.schedule: invalid cron')
    assert _names(live, "Job") == []  # a.yaml was valid but nothing was sent


def test_apply_names_every_bad_file_and_applies_nothing(
    invoke: Invoke, live: LiveServer, tmp_path: Path
) -> None:
    label_rule = (
        "must consist of lower-case letters, digits and '-', and start and end with a letter or "
        "digit"
    )
    specs = tmp_path / "specs"
    specs.mkdir()
    _write(specs, "00-good.yaml", CRONJOB_YAML.replace("name: nightly", "name: good"))
    for i in range(1, 11):
        bad = CRONJOB_YAML.replace("name: nightly", f"name: bad-{i}")
        _write(specs, f"{i:02}-bad.yaml", bad.replace("targets: [eu, us]", "targets: [EU]"))
    two_problems = CRONJOB_YAML.replace("name: nightly", "name: two").replace(
        "    targets: [eu, us]\n",
        "    targets: [eu, eu]\n    successPolicy: {mode: AtLeast, n: 5}\n",
    )
    _write(specs, "11-two-problems.yaml", two_problems)
    result = invoke("apply", "-f", str(specs))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        *(
            f'error: {specs}/{i:02}-bad.yaml: CronJob "bad-{i}": '
            f"spec.jobTemplate.targets.names[0]: name 'EU' {label_rule}"
            for i in range(1, 11)
        ),
        (
            f'error: {specs}/11-two-problems.yaml: CronJob "two": '
            "spec.jobTemplate.targets.names: target names must be unique (repeated: eu); "
            "spec.jobTemplate.successPolicy.n: must not exceed the number of targets (2), got 5"
        ),
    ]
    # 00-good.yaml is valid, but nothing is sent while any file is bad
    assert _names(live, "CronJob") == []


def test_apply_reports_every_problem_of_a_resource_on_one_line(
    invoke: Invoke, tmp_path: Path
) -> None:
    text = JOB_YAML.replace("name: adhoc", "name: Ad_hoc").replace("argv: [echo, hi]", "")
    result = invoke("apply", "-f", str(_write(tmp_path, "job.yaml", text)))
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert 'Job "Ad_hoc": metadata.name:' in line
    assert "; spec.main: exactly one of argv" in line


def test_apply_of_missing_path_or_empty_dir_fails(invoke: Invoke, tmp_path: Path) -> None:
    missing = invoke("apply", "-f", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 1
    assert "nope.yaml: no such file or directory" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("apply", "-f", str(empty))
    assert result.exit_code == 1
    assert "no *.yaml or *.yml files" in result.stderr


def test_apply_refuses_subjobs(invoke: Invoke, tmp_path: Path) -> None:
    text = """\
apiVersion: cronloop.dev/v1
kind: SubJob
metadata: {name: adhoc-eu}
spec:
  job: {name: adhoc}
  target: eu
  main: {runtime: process, argv: [echo]}
"""
    result = invoke("apply", "-f", str(_write(tmp_path, "sub.yaml", text)))
    assert result.exit_code == 1
    assert "SubJobs are created by their Job and cannot be applied" in result.stderr


def test_apply_reports_server_refusals_and_goes_on(invoke: Invoke, tmp_path: Path) -> None:
    job = _write(tmp_path, "job.yaml", JOB_YAML)
    assert invoke("apply", "-f", str(job)).exit_code == 0
    job.write_text(JOB_YAML.replace("[eu, us]", "[ap]") + "---\n" + CRONJOB_YAML)
    result = invoke("apply", "-f", str(job))
    assert result.exit_code == 1
    assert "spec: a Job's spec cannot change once created" in result.stderr
    assert result.stdout == "cronjob/nightly created\n"


def test_run_creates_the_job(invoke: Invoke, live: LiveServer, tmp_path: Path) -> None:
    result = invoke("run", "-f", str(_write(tmp_path, "job.yaml", JOB_YAML)))
    assert result.exit_code == 0, result.output
    assert result.stdout == "job/adhoc created\n"
    assert _names(live, "Job") == ["adhoc"]


def test_run_needs_exactly_one_job(invoke: Invoke, tmp_path: Path) -> None:
    path = _write(tmp_path, "two.yaml", JOB_YAML + "---\n" + CRONJOB_YAML)
    result = invoke("run", "-f", str(path))
    assert result.exit_code == 1
    assert "expected exactly one Job, found 2 (Job, CronJob)" in result.stderr


def _finish_job(live: LiveServer, phase: Phase, reason: str | None = None) -> None:
    """Once the CLI watches, move the job through Running to ``phase``."""
    assert live.watch_requested.wait(10)
    running = PhaseCounts(running=1, succeeded=1)
    live.call(lambda store: set_job_status(store, "adhoc", phase=Phase.RUNNING, counts=running))
    done = (
        PhaseCounts(succeeded=2) if phase is Phase.SUCCEEDED else PhaseCounts(succeeded=1, failed=1)
    )
    live.call(
        lambda store: set_job_status(
            store,
            "adhoc",
            phase=phase,
            counts=done,
            reason=reason,
            message="1 of 2 targets succeeded; us: exited with code 3" if reason else None,
        )
    )


def test_run_wait_exits_0_when_the_job_succeeds(
    invoke: Invoke, live: LiveServer, tmp_path: Path
) -> None:
    worker = in_background(lambda: _finish_job(live, Phase.SUCCEEDED))
    result = invoke("run", "-f", str(_write(tmp_path, "job.yaml", JOB_YAML)), "--wait")
    worker.join(10)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["job/adhoc created", "job/adhoc Succeeded"]
    assert "sub-jobs succeeded" in result.stderr  # the progress bar


def test_run_wait_exits_1_with_the_reason_when_the_job_fails(
    invoke: Invoke, live: LiveServer, tmp_path: Path
) -> None:
    worker = in_background(lambda: _finish_job(live, Phase.FAILED, "SuccessPolicyUnmet"))
    result = invoke("run", "-f", str(_write(tmp_path, "job.yaml", JOB_YAML)), "--wait")
    worker.join(10)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == (
        "job/adhoc Failed (SuccessPolicyUnmet: 1 of 2 targets succeeded; us: exited with code 3)"
    )

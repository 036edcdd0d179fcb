"""The spec directory of ``cronloop up`` applies files by the rules of ``cronloop apply``: a
Job's spec cannot change, SubJobs are not written by hand, system labels and annotations are
kept, and a file applies whole or not at all."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from rich.console import Console

from cronloop.cli.up import apply_spec_dir
from cronloop.store import Store

CRONJOB = """
apiVersion: cronloop.dev/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    main: {runtime: process, argv: [/bin/true]}
"""

JOB = """
apiVersion: cronloop.dev/v1
kind: Job
metadata: {name: backfill}
spec:
  main: {runtime: process, argv: [/bin/echo, one]}
"""


async def _apply(store: Store, specs: Path) -> tuple[int, str]:
    out = io.StringIO()
    applied = await apply_spec_dir(store, [specs], Console(file=out, width=400))
    return applied, out.getvalue()


async def test_a_jobs_spec_change_in_a_file_is_refused_and_nothing_of_the_file_written(
    store: Store, tmp_path: Path
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "both.yaml").write_text(CRONJOB + "---" + JOB)
    assert (await _apply(store, specs))[0] == 2
    cronjob_version = (await store.get("CronJob", "nightly")).resource_version

    # The CronJob's change is fine on its own, the Job's is not: the file is not applied.
    (specs / "both.yaml").write_text(
        CRONJOB.replace("0 3 * * *", "0 4 * * *") + "---" + JOB.replace("one", "two")
    )
    applied, printed = await _apply(store, specs)
    assert applied == 0
    assert "not applied" in printed
    assert "a Job's spec cannot change once created" in printed
    assert str(specs / "both.yaml") in printed
    job = await store.get("Job", "backfill")
    assert job.spec["main"]["argv"] == ["/bin/echo", "one"]
    cronjob = await store.get("CronJob", "nightly")
    assert (cronjob.resource_version, cronjob.spec["schedule"]) == (cronjob_version, "0 3 * * *")


async def test_a_subjob_in_a_spec_file_is_refused(store: Store, tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "sub.yaml").write_text(
        "apiVersion: cronloop.dev/v1\nkind: SubJob\nmetadata: {name: backfill-default}\n"
        "spec:\n  job: {name: backfill, uid: x}\n  target: default\n"
        "  main: {runtime: process, argv: [/bin/true]}\n"
    )
    applied, printed = await _apply(store, specs)
    assert applied == 0
    assert "SubJobs are written by the Job controller" in printed
    assert (await store.list("SubJob")).items == []


async def test_an_edited_cronjob_keeps_its_system_labels(store: Store, tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "nightly.yaml").write_text(CRONJOB)
    await _apply(store, specs)
    # A label in the system's namespace, as the system writes them: a spec file cannot
    # hold one, and applying the file again must keep it, as `cronloop apply` does.
    stored = await store.get("CronJob", "nightly")
    labels = {**stored.labels, "cronloop.dev/owner": "ops"}
    await store.update(dataclasses.replace(stored, labels=labels))
    (specs / "nightly.yaml").write_text(CRONJOB.replace("0 3 * * *", "0 5 * * *"))
    applied, printed = await _apply(store, specs)
    assert (applied, printed) == (1, "")
    after = await store.get("CronJob", "nightly")
    assert after.spec["schedule"] == "0 5 * * *"
    assert after.labels["cronloop.dev/owner"] == "ops"

"""Fan-out from templates: the stored sub-jobs are exactly what the typed models dump, and the
models kept for them are exactly what reading them back gives."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cronloop.api import (
    Attempt,
    CronJob,
    CronJobSpec,
    Guarantee,
    JobSpec,
    JobStatus,
    ObjectMeta,
    ObjectRef,
    PhaseCounts,
    StepName,
    SubJob,
    SubJobSpec,
    SubJobStatus,
    load_resources,
)
from cronloop.controllers import (
    FanOutTemplate,
    dump_model,
    embedded_subjob,
    from_stored,
    json_time,
    plan_fan_out,
    to_stored,
)
from cronloop.controllers.cronjob import GUARANTEE_ANNOTATION, _run_template
from cronloop.store import StoredObject, new_uid

SPECS = {
    "one target": "main: {runtime: inline, callable: 'pkg.mod:fn', kwargs: {n: 1}}",
    "regions, prepare": (
        "targets: [eu, us, ap]\n"
        "prepare: {runtime: process, argv: [/bin/true], timeoutSeconds: 5}\n"
        "main: {runtime: process, command: 'echo hi', shell: true, env: {A: b}}\n"
        "retries: {limit: 2, backoffSeconds: 1}"
    ),
    "shards": (
        "targets: {shards: 4}\nsuccessPolicy: {mode: AtLeast, n: 3}\n"
        "main: {runtime: process, argv: [/bin/echo, x], logLimitBytes: 1000}"
    ),
}


def _job_spec(body: str) -> JobSpec:
    text = "apiVersion: cronloop.dev/v1\nkind: Job\nmetadata: {name: x}\nspec:\n"
    text += "".join(f"  {line}\n" for line in body.splitlines())
    (job,) = load_resources(text)
    assert isinstance(job.spec, JobSpec)
    return job.spec


def _as_stored(obj: StoredObject) -> StoredObject:
    return dataclasses.replace(
        obj, resource_version=7, generation=1, created_at=datetime(2026, 1, 1, tzinfo=UTC)
    )


@pytest.mark.parametrize("body", SPECS.values(), ids=SPECS.keys())
def test_a_planned_fan_out_is_what_the_models_dump(body: str, tmp_path: Path) -> None:
    spec = _job_spec(body)
    template = FanOutTemplate.of(spec)
    assert template is not None
    run_uid = new_uid()
    plan = plan_fan_out(template, job="nightly-1", job_uid=run_uid, log_dir=tmp_path)
    names = spec.targets.resolve()
    objects = plan.objects
    if len(names) == 1:
        # One record: the sub-job is kept in the run, and shown as made from it.
        assert objects == []
        assert plan.embedded is not None
        run = _as_stored(
            StoredObject(
                "Job", "nightly-1", spec=dump_model(spec), status={"subJob": plan.embedded}
            )
        )
        run = dataclasses.replace(run, uid=run_uid)
        kept = embedded_subjob(run)
        assert kept is not None
        objects = [kept]
    else:
        assert plan.embedded is None
    assert [o.name for o in objects] == [f"nightly-1-{t}" for t in names]
    for index, (obj, start) in enumerate(zip(objects, plan.starts, strict=True)):
        attempt = obj.status["attempts"][0]
        first = StepName.PREPARE if spec.prepare is not None else StepName.MAIN
        # The same sub-job through the models, with this plan's session and runtime record.
        by_models = SubJob(
            metadata=ObjectMeta(name=obj.name, labels={"cronloop.dev/job": "nightly-1"}),
            spec=SubJobSpec(
                job=ObjectRef(name="nightly-1", uid=run_uid),
                target=names[index],
                shard_index=index if spec.targets.shards is not None else None,
                prepare=spec.prepare,
                main=spec.main,
                retries=spec.retries,
            ),
            status=SubJobStatus(
                attempts=(Attempt(number=1, step=first, runtime=attempt["runtime"]),),
                session_id=start.session,
            ),
        )
        expected = to_stored(by_models, owner_uid=run_uid)
        assert (obj.spec, obj.status, dict(obj.labels), obj.owner_uid) == (
            expected.spec,
            expected.status,
            dict(expected.labels),
            expected.owner_uid,
        )
        assert attempt["runtime"]["session"] == start.session
        assert attempt["runtime"]["logPath"] == str(
            tmp_path / "nightly-1" / f"{obj.name}.1.{first.value}.log"
        )
        assert isinstance(from_stored(_as_stored(obj)), SubJob)
    assert len({o.uid for o in objects}) == len(objects)
    assert len({s.session for s in plan.starts}) == len(plan.starts)


def test_selector_targets_have_no_template() -> None:
    spec = _job_spec(
        "targets: {selector: {matchLabels: {region: eu}}}\n"
        "main: {runtime: inline, callable: 'pkg.mod:fn'}"
    )
    assert FanOutTemplate.of(spec) is None


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=11)), timezone(-timedelta(hours=3, minutes=30))]
        ),
    )
)
def test_json_time_is_the_models_own_form(moment: datetime) -> None:
    dumped = dump_model(JobStatus(start_time=moment))
    assert json_time(moment) == dumped["startTime"]


@pytest.mark.parametrize(
    "body",
    [
        *SPECS.values(),
        "targets: {selector: {matchLabels: {a: b}}}\nmain: {runtime: inline, callable: 'p:f'}",
    ],
    ids=[*SPECS.keys(), "selector"],
)
@pytest.mark.parametrize("expected_duration", [None, 30.0])
def test_a_run_template_is_what_the_models_dump(body: str, expected_duration: float | None) -> None:
    job_spec = _job_spec(body)
    cronjob = CronJob(
        metadata=ObjectMeta(name="nightly", uid=new_uid()),
        spec=CronJobSpec(
            schedule="@hourly",
            job_template=job_spec,
            expected_duration_seconds=expected_duration,
            guarantee=Guarantee.AT_MOST_ONCE,
        ),
    )
    template = _run_template(cronjob)
    spec = job_spec
    if expected_duration is not None:
        spec = spec.model_copy(update={"expected_duration_seconds": expected_duration})
    assert template.job_spec == {
        **dump_model(spec),
        "__annotations__": {GUARANTEE_ANNOTATION: "AtMostOnce"},
    }
    pending = spec.targets.count
    status = JobStatus(
        counts=PhaseCounts() if pending is None else PhaseCounts(pending=pending),
        cron_job=ObjectRef(name="nightly", uid=cronjob.metadata.uid or ""),
    )
    assert template.run_status == dump_model(status)
    # The new-run status is shared per target count (cached): making the template of another
    # CronJob with as many targets leaves this one as it was made. (A second template of the
    # same CronJob alone would not show it: it writes back the same name.)
    other = cronjob.model_copy(update={"metadata": ObjectMeta(name="hourly", uid=new_uid())})
    assert _run_template(other).run_status["cronJob"]["name"] == "hourly"
    assert template.run_status == dump_model(status)
    assert _run_template(cronjob).run_status == template.run_status
    if spec.targets.selector is None:
        assert template.fan_out is not None
        assert template.fan_out.spec == spec
    else:
        assert template.fan_out is None

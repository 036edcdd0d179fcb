"""Validation problems are reported at the field they are about, and all of them at once.

Each case asserts the exact ``(path, message)`` pairs: a problem found by a check that spans a
model (a name rule of a kind, a policy against the targets) must still point at the field, no
follow-on error may appear next to the real one, and every problem of every document (of every
file given to :func:`load_sources`) is reported in one :class:`ResourceError`.
"""

from __future__ import annotations

from collections.abc import Mapping

import pydantic
import pytest

from cronloop.api import (
    ResourceError,
    RetryPolicy,
    SuccessPolicy,
    Targets,
    load_resources,
    load_sources,
    parse_resource,
)

CRONJOB = """\
apiVersion: cronloop.dev/v1
kind: CronJob
metadata:
  name: {name}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    targets: {targets}
{extra}    main: {{runtime: process, argv: [echo, hi]}}
"""

LABEL_RULE = (
    "must consist of lower-case letters, digits and '-', and start and end with a letter or digit"
)


def cronjob(name: str = "nightly", targets: str = "[eu, us]", extra: str = "") -> str:
    return CRONJOB.format(name=name, targets=targets, extra=extra)


def job(spec: Mapping[str, object], name: str = "run") -> dict[str, object]:
    return {"kind": "Job", "metadata": {"name": name}, "spec": spec}


MAIN = {"runtime": "inline", "callable": "a:b"}


def problems_of(text: str) -> tuple[tuple[str, str], ...]:
    with pytest.raises(ResourceError) as info:
        load_resources(text)
    return info.value.problems


def problems_of_data(data: dict[str, object]) -> tuple[tuple[str, str], ...]:
    with pytest.raises(ResourceError) as info:
        parse_resource(data)
    return info.value.problems


# ---- 1. an invalid target name: only the real problem, at the item --------------------------


def test_an_invalid_only_target_name_is_reported_once_at_its_index() -> None:
    assert problems_of(cronjob(targets="[EU]")) == (
        ("spec.jobTemplate.targets.names[0]", f"name 'EU' {LABEL_RULE}"),
    )


def test_an_invalid_target_name_among_valid_ones_is_reported_at_its_index() -> None:
    assert problems_of(cronjob(targets="[eu, Us]")) == (
        ("spec.jobTemplate.targets.names[1]", f"name 'Us' {LABEL_RULE}"),
    )


def test_an_empty_target_list_is_reported_at_names() -> None:
    expected = (("spec.targets.names", "must list at least one target"),)
    assert problems_of_data(job({"targets": [], "main": MAIN})) == expected
    assert problems_of_data(job({"targets": {"names": []}, "main": MAIN})) == expected


def test_repeated_target_names_are_reported_at_names() -> None:
    assert problems_of_data(job({"targets": ["eu", "us", "eu"], "main": MAIN})) == (
        ("spec.targets.names", "target names must be unique (repeated: eu)"),
    )


# ---- 2. a kind's name rule is reported at metadata.name ------------------------------------


def test_a_too_long_cronjob_name_is_reported_at_metadata_name() -> None:
    name = "n" * 58
    assert problems_of(cronjob(name=name)) == (
        ("metadata.name", f"name '{name}' is 58 characters long (at most 52)"),
    )


def test_job_name_rules_are_reported_at_metadata_name() -> None:
    long_name = "j" * 64
    assert problems_of_data(job({"main": MAIN}, name=long_name)) == (
        ("metadata.name", f"name '{long_name}' is 64 characters long (at most 63)"),
    )
    assert problems_of_data(job({"main": MAIN}, name="a.b")) == (
        ("metadata.name", f"name 'a.b' {LABEL_RULE}"),
    )


# ---- 3. policies are reported at the policy's field -----------------------------------------


def test_success_policy_n_above_the_targets_is_reported_at_n() -> None:
    extra = "    successPolicy: {mode: AtLeast, n: 5}\n"
    assert problems_of(cronjob(extra=extra)) == (
        ("spec.jobTemplate.successPolicy.n", "must not exceed the number of targets (2), got 5"),
    )
    shards = {"targets": {"shards": 3}, "successPolicy": {"mode": "AtLeast", "n": 4}, "main": MAIN}
    assert problems_of_data(job(shards)) == (
        ("spec.successPolicy.n", "must not exceed the number of targets (3), got 4"),
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"mode": "AtLeast"}, ("spec.successPolicy.n", "required when mode is AtLeast")),
        (
            {"mode": "All", "n": 2},
            ("spec.successPolicy.n", "only allowed when mode is AtLeast (mode is All)"),
        ),
    ],
)
def test_success_policy_n_problems_are_reported_at_n(
    policy: dict[str, object], expected: tuple[str, str]
) -> None:
    assert problems_of_data(job({"successPolicy": policy, "main": MAIN})) == (expected,)


def test_a_backoff_cap_below_the_backoff_is_reported_at_the_cap() -> None:
    retries = {"backoffSeconds": 10, "maxBackoffSeconds": 5}
    assert problems_of_data(job({"retries": retries, "main": MAIN})) == (
        ("spec.retries.maxBackoffSeconds", "must be at least backoffSeconds (10), got 5"),
    )


def test_the_models_raise_the_same_located_errors_when_built_directly() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        SuccessPolicy.model_validate({"mode": "AtLeast"})
    assert [(e["loc"], e["msg"]) for e in info.value.errors()] == [
        (("n",), "Value error, required when mode is AtLeast")
    ]
    with pytest.raises(pydantic.ValidationError) as info:
        RetryPolicy(backoff_seconds=10, max_backoff_seconds=5)
    assert [e["loc"] for e in info.value.errors()] == [("maxBackoffSeconds",)]
    with pytest.raises(pydantic.ValidationError) as info:
        Targets.model_validate(["a", "a"])
    assert [e["loc"] for e in info.value.errors()] == [("names",)]


# ---- 4. every problem of a document, of a file, of a directory -----------------------------
# (`cronloop apply` of a directory: tests/cli/test_apply_run.py)


def test_repeated_targets_and_a_too_large_n_are_both_reported() -> None:
    extra = "    successPolicy: {mode: AtLeast, n: 5}\n"
    assert problems_of(cronjob(targets="[eu, eu]", extra=extra)) == (
        ("spec.jobTemplate.targets.names", "target names must be unique (repeated: eu)"),
        ("spec.jobTemplate.successPolicy.n", "must not exceed the number of targets (2), got 5"),
    )


def test_a_too_large_n_is_reported_next_to_unrelated_problems() -> None:
    spec = {"targets": ["eu"], "successPolicy": {"mode": "AtLeast", "n": 2}, "colour": "red"}
    assert problems_of_data(job(spec)) == (
        ("spec.main", "required field is missing"),
        ("spec.colour", "unknown field"),
        ("spec.successPolicy.n", "must not exceed the number of targets (1), got 2"),
    )


def test_n_is_not_compared_with_targets_that_have_no_count() -> None:
    # Neither a bad shard count nor two kinds of targets say how many targets there are.
    policy = {"mode": "AtLeast", "n": 5}
    bad_shards = {"targets": {"shards": 0}, "successPolicy": policy, "main": MAIN}
    assert [p for p, _ in problems_of_data(job(bad_shards))] == ["spec.targets.shards"]
    both = {"targets": {"shards": 2, "names": ["a"]}, "successPolicy": policy, "main": MAIN}
    assert [p for p, _ in problems_of_data(job(both))] == ["spec.targets"]


def test_every_invalid_document_of_a_file_is_reported() -> None:
    good = cronjob(name="good")
    first = cronjob(name="first", targets="[EU]")
    second = cronjob(name="second", targets="[eu, eu]")
    with pytest.raises(ResourceError) as info:
        load_resources("---\n".join([first, good, second]), source="specs.yaml")
    error = info.value
    assert [(e.where, e.problems) for e in error.errors] == [
        (
            'specs.yaml (document 1): CronJob "first"',
            (("spec.jobTemplate.targets.names[0]", f"name 'EU' {LABEL_RULE}"),),
        ),
        (
            'specs.yaml (document 3): CronJob "second"',
            (("spec.jobTemplate.targets.names", "target names must be unique (repeated: eu)"),),
        ),
    ]
    # where and problems stay those of the first invalid document; the message has them all
    assert (error.where, error.problems) == (error.errors[0].where, error.errors[0].problems)
    assert str(error).splitlines() == [str(e) for e in error.errors]


def test_load_sources_reports_every_bad_source_and_returns_all_resources_otherwise() -> None:
    sources = [(f"specs/{i:02}.yaml", cronjob(name=f"cj-{i}", targets="[EU]")) for i in range(10)]
    sources.insert(3, ("specs/good.yaml", cronjob(name="good")))
    sources.append(("specs/broken.yaml", "a: [\n"))
    with pytest.raises(ResourceError) as info:
        load_sources(sources)
    errors = info.value.errors
    assert [e.where for e in errors] == [
        *(f'specs/{i:02}.yaml: CronJob "cj-{i}"' for i in range(10)),
        "specs/broken.yaml: line 2, column 1",
    ]
    assert all(
        e.problems == (("spec.jobTemplate.targets.names[0]", f"name 'EU' {LABEL_RULE}"),)
        for e in errors[:10]
    )
    resources = load_sources([("a.yaml", cronjob(name="a")), ("b.yaml", cronjob(name="b"))])
    assert [r.metadata.name for r in resources] == ["a", "b"]
    assert load_sources([]) == []


def test_a_single_error_is_its_own_only_error() -> None:
    with pytest.raises(ResourceError) as info:
        load_resources(cronjob(name="n" * 58))
    assert info.value.errors == (info.value,)

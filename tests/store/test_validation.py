"""Bad input is refused before anything is written, with an error naming the field."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cronloop.store import AlreadyExists, InvalidObject, Store, StoredObject
from tests.store.conftest import OpenStore
from tests.store.helpers import job


@pytest.mark.parametrize(
    ("obj", "pattern"),
    [
        (StoredObject("Job", ""), "name: must be a non-empty string"),
        (StoredObject("Job", "has space"), "name: must not contain whitespace"),
        (StoredObject("Job", "a/b"), "name: must not contain"),
        (StoredObject("Job", "x" * 254), "name: longer than 253"),
        (StoredObject("", "a"), "kind: must be CamelCase"),
        (StoredObject("job", "a"), "kind: must be CamelCase"),
        (StoredObject("Job", "a", spec={"when": datetime.now(UTC)}), "spec: is not JSON"),
        (StoredObject("Job", "a", spec={1: "int key"}), "spec: is not JSON"),  # type: ignore[dict-item]
        (StoredObject("Job", "a", spec={"big": 2**70}), "spec: is not JSON"),
        (StoredObject("Job", "a", status={"s": {1, 2}}), "status: is not JSON"),
        (StoredObject("Job", "a", spec=[1, 2]), "spec: must be a dict"),  # type: ignore[arg-type]
        (StoredObject("Job", "a", labels={"k": 1}), "labels\\['k'\\]: value must be a string"),  # type: ignore[dict-item]
        (StoredObject("Job", "a", labels={"": "v"}), "labels: key '' must be"),
        (StoredObject("Job", "a", unique_key=""), "unique_key: must be None or a string"),
        (StoredObject("Job", "a", owner_uid=""), "owner_uid: must be None or a string"),
    ],
)
async def test_bad_object_is_refused_before_writing(
    store: Store, obj: StoredObject, pattern: str
) -> None:
    with pytest.raises(InvalidObject, match=pattern):
        await store.create(obj)
    with pytest.raises(InvalidObject, match=pattern):
        await store.create_many([job("fine-1"), obj, job("fine-2")])
    with pytest.raises(InvalidObject, match=pattern):
        await store.apply(obj)
    assert await store.current_revision() == 0
    assert (await store.list("Job")).items == []


async def test_invalid_object_is_a_value_error_naming_the_object(store: Store) -> None:
    with pytest.raises(ValueError, match=r'^Job "a": spec: is not JSON-serialisable'):
        await store.create(StoredObject("Job", "a", spec={"t": datetime.now(UTC)}))


async def test_bad_update_is_refused_before_writing(store: Store) -> None:
    created = await store.create(job("a"))
    with pytest.raises(InvalidObject, match="status: is not JSON"):
        await store.update_status(replace(created, status={"x": object()}))
    with pytest.raises(InvalidObject, match="expected_version: must be"):
        await store.update(replace(created, resource_version=0))
    with pytest.raises(InvalidObject, match="expected_version"):
        await store.update(created, expected_version=-3)
    good = replace(created, status={"ok": True})
    with pytest.raises(InvalidObject, match="appears twice"):
        await store.update_many([good, good], status=True)
    with pytest.raises(InvalidObject, match="spec: is not JSON"):
        await store.update_many([replace(created, spec={"t": math.pi, "x": b"bytes"})])
    assert await store.current_revision() == 1


async def test_bad_arguments_are_named(store: Store) -> None:
    with pytest.raises(InvalidObject, match="objs"):
        await store.create_many(job("a"))  # type: ignore[arg-type]
    with pytest.raises(InvalidObject, match="limit"):
        await store.list("Job", limit=0)
    with pytest.raises(InvalidObject, match="labels"):
        await store.list("Job", labels={"k": 3})  # type: ignore[dict-item]
    with pytest.raises(InvalidObject, match="from_revision"):
        await anext(aiter(store.watch(from_revision=-1)))
    with pytest.raises(InvalidObject, match="before_revision"):
        await store.compact(5)
    with pytest.raises(InvalidObject, match="name"):
        await store.get("Job", "")
    with pytest.raises(InvalidObject, match="uid"):
        await store.get_by_uid("")


async def test_duplicates_inside_one_batch_are_refused(store: Store) -> None:
    with pytest.raises(AlreadyExists, match='Job "a" already exists'):
        await store.create_many([job("a"), job("b"), job("a")])
    with pytest.raises(AlreadyExists, match="unique_key"):
        await store.create_many([job("a", unique_key="k"), job("b", unique_key="k")])
    assert await store.current_revision() == 0


async def test_bad_store_options_are_named(open_store: OpenStore) -> None:
    with pytest.raises(InvalidObject, match="synchronous"):
        await open_store(synchronous="OFF")
    with pytest.raises(InvalidObject, match="readers"):
        await open_store(readers=0)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
label_maps = st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=10), max_size=4)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=json_objects, status=json_objects, labels=label_maps)
async def test_what_is_written_is_what_is_read(
    store: Store,
    spec: dict[str, Any],
    status: dict[str, Any],
    labels: dict[str, str],
) -> None:
    name = f"j{await store.current_revision()}"
    created = await store.create(StoredObject("Job", name, spec=spec, status=status, labels=labels))
    assert (created.spec, created.status, dict(created.labels)) == (spec, status, labels)
    fetched = await store.get("Job", name)
    assert fetched == created
    if labels:
        selected = await store.list("Job", labels=labels)
        assert created in selected.items

"""Create, read, update, status, apply and delete: the single-object half of the contract."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from cronloop.store import (
    AlreadyExists,
    Conflict,
    EventType,
    InvalidObject,
    NotFound,
    Store,
    StoredObject,
)
from tests.store.conftest import OpenStore
from tests.store.helpers import collect, job


async def test_create_assigns_identity_and_bookkeeping(store: Store) -> None:
    created = await store.create(job("a", labels={"team": "x"}, status={"phase": "Pending"}))
    assert created.uid
    assert created.resource_version == 1
    assert created.generation == 1
    assert created.created_at is not None
    assert created.created_at == created.updated_at
    assert created.created_at.tzinfo is not None
    assert created.labels == {"team": "x"}
    assert created.status == {"phase": "Pending"}
    assert await store.get("Job", "a") == created
    assert await store.get_by_uid(created.uid) == created
    assert await store.current_revision() == 1


async def test_create_ignores_caller_bookkeeping(store: Store) -> None:
    fake = job("a", uid="mine", resource_version=99, generation=7)
    created = await store.create(fake)
    assert (created.uid != "mine", created.resource_version, created.generation) == (True, 1, 1)


async def test_injected_clock_sets_timestamps(open_store: OpenStore) -> None:
    moments = iter(
        [datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC)]
    )
    store = await open_store(clock=lambda: next(moments))
    created = await store.create(job("a"))
    assert created.created_at == datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    updated = await store.update_status(replace(created, status={"phase": "Running"}))
    assert updated.created_at == created.created_at
    assert updated.updated_at == datetime(2030, 1, 2, tzinfo=UTC)


async def test_same_name_twice_is_already_exists(store: Store) -> None:
    await store.create(job("a"))
    with pytest.raises(AlreadyExists, match=r'^Job "a" already exists$') as info:
        await store.create(job("a"))
    assert (info.value.kind, info.value.name, info.value.field) == ("Job", "a", "name")
    # The same name under another kind is a different object.
    await store.create(StoredObject("CronJob", "a"))


async def test_unique_key_clash_is_already_exists(store: Store) -> None:
    await store.create(job("run-1", unique_key="cj-uid@1700000000"))
    with pytest.raises(AlreadyExists, match="unique_key") as info:
        await store.create(job("run-1-again", unique_key="cj-uid@1700000000"))
    assert info.value.field == "unique_key"
    assert "run-1-again" in str(info.value)
    # Unique per kind; and None never clashes.
    await store.create(StoredObject("SubJob", "x", unique_key="cj-uid@1700000000"))
    await store.create(job("free-1"))
    await store.create(job("free-2"))
    assert await store.current_revision() == 4


async def test_get_missing_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match=r'^Job "nope" not found$'):
        await store.get("Job", "nope")
    with pytest.raises(NotFound, match="uid"):
        await store.get_by_uid("no-such-uid")
    with pytest.raises(LookupError):  # NotFound is a LookupError for generic handlers
        await store.get("Job", "nope")


async def test_update_replaces_spec_and_labels_and_bumps_generation(store: Store) -> None:
    created = await store.create(job("a", labels={"v": "1"}, status={"phase": "Running"}))
    updated = await store.update(
        replace(created, spec={"command": ["new"]}, labels={"v": "2"}, status={"ignored": True})
    )
    assert updated.spec == {"command": ["new"]}
    assert updated.labels == {"v": "2"}
    assert updated.status == {"phase": "Running"}  # update never writes status
    assert (updated.generation, updated.resource_version) == (2, 2)
    assert await store.get("Job", "a") == updated
    assert (await store.list("Job", labels={"v": "2"})).items == [updated]
    assert (await store.list("Job", labels={"v": "1"})).items == []


async def test_labels_only_update_keeps_generation(store: Store) -> None:
    created = await store.create(job("a", labels={"v": "1"}))
    updated = await store.update(replace(created, labels={"v": "1", "w": "2"}))
    assert (updated.generation, updated.resource_version) == (1, 2)


async def test_update_status_keeps_generation_and_spec(store: Store) -> None:
    created = await store.create(job("a"))
    updated = await store.update_status(
        replace(created, status={"phase": "Running"}, spec={"ignored": 1})
    )
    assert updated.status == {"phase": "Running"}
    assert updated.spec == created.spec
    assert (updated.generation, updated.resource_version) == (1, 2)


async def test_stale_update_is_conflict_with_clear_message(store: Store) -> None:
    created = await store.create(job("nightly-1700000000"))
    for _ in range(10):
        await store.create(job(f"filler-{_}"))
    first = await store.update_status(replace(created, status={"phase": "Running"}))
    message = (
        f'Job "nightly-1700000000" has resourceVersion {first.resource_version}, '
        f"write expected {created.resource_version}"
    )
    with pytest.raises(Conflict, match=f"^{re.escape(message)}$") as info:
        await store.update_status(replace(created, status={"phase": "Failed"}))
    assert (info.value.actual, info.value.expected) == (first.resource_version, 1)
    with pytest.raises(Conflict):
        await store.update(replace(created, spec={"x": 1}))
    with pytest.raises(Conflict):
        await store.update(replace(first, spec={"x": 1}), expected_version=1)
    assert await store.get("Job", "nightly-1700000000") == first


async def test_update_of_recreated_object_is_conflict(store: Store) -> None:
    old = await store.create(job("a"))
    await store.delete("Job", "a")
    new = await store.create(job("a"))
    with pytest.raises(Conflict, match="deleted and re-created"):
        await store.update_status(
            replace(old, status={"x": 1}), expected_version=new.resource_version
        )


async def test_update_missing_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.update(job("ghost", resource_version=1))


async def test_noop_update_takes_no_revision(store: Store) -> None:
    created = await store.create(job("a", labels={"x": "y"}, status={"s": 1}))
    same = await store.update(replace(created, spec=dict(reversed(list(created.spec.items())))))
    assert same == created
    assert await store.update_status(created) == created
    assert await store.current_revision() == 1


async def test_owner_and_unique_key_are_immutable(store: Store) -> None:
    owner = await store.create(StoredObject("CronJob", "cj"))
    child = await store.create(job("a", owner_uid=owner.uid, unique_key="k"))
    with pytest.raises(InvalidObject, match="owner_uid: cannot change"):
        await store.update(replace(child, owner_uid=None, spec={"x": 1}))
    with pytest.raises(InvalidObject, match="unique_key: cannot change"):
        await store.update(replace(child, unique_key="other", spec={"x": 1}))
    assert await store.get("Job", "a") == child


async def test_apply_creates_then_updates_spec_only_when_changed(store: Store) -> None:
    created = await store.apply(job("a", spec={"v": 1}, labels={"l": "1"}))
    assert created.resource_version == 1
    assert await store.apply(job("a", spec={"v": 1}, labels={"l": "1"})) == created
    status = await store.update_status(replace(created, status={"phase": "Running"}))
    applied = await store.apply(job("a", spec={"v": 2}, labels={"l": "1"}))
    assert applied.spec == {"v": 2}
    assert applied.status == {"phase": "Running"}  # apply keeps the status
    assert applied.generation == 2
    assert applied.uid == created.uid
    assert applied.resource_version == status.resource_version + 1


async def test_delete_returns_object_at_deletion_revision(store: Store) -> None:
    created = await store.create(job("a"))
    deleted = await store.delete("Job", "a")
    assert deleted.uid == created.uid
    assert deleted.resource_version == 2
    with pytest.raises(NotFound):
        await store.get("Job", "a")
    with pytest.raises(NotFound):
        await store.delete("Job", "a")


async def test_delete_with_stale_version_is_conflict(store: Store) -> None:
    created = await store.create(job("a"))
    await store.update_status(replace(created, status={"x": 1}))
    with pytest.raises(Conflict):
        await store.delete("Job", "a", expected_version=created.resource_version)
    await store.delete("Job", "a", expected_version=2)


async def test_delete_cascades_to_owned_objects_transitively(store: Store) -> None:
    cronjob = await store.create(StoredObject("CronJob", "cj"))
    jobs = await store.create_many([job(f"j{i}", owner_uid=cronjob.uid) for i in range(3)])
    subjobs = await store.create_many(
        [StoredObject("SubJob", f"s{i}-{r}", owner_uid=jobs[i].uid) for i in range(3) for r in "ab"]
    )
    bystander = await store.create(job("other"))
    before = await store.current_revision()
    deleted = await store.delete("CronJob", "cj")
    assert deleted.uid == cronjob.uid
    assert [o.name for o in (await store.list("Job")).items] == ["other"]
    assert (await store.list("SubJob")).items == []
    assert await store.get("Job", "other") == bystander
    # One DELETED event per object, owned objects before their owners, contiguous revisions.
    events = await collect(store, from_revision=before, until_revision=before + 10)
    assert [e.type for e in events] == [EventType.DELETED] * 10
    assert [e.revision for e in events] == list(range(before + 1, before + 11))
    order = [e.object.uid for e in events]
    for sub in subjobs:
        assert order.index(sub.uid) < order.index(sub.owner_uid or "")
    for parent in jobs:
        assert order.index(parent.uid) < order.index(cronjob.uid)
    assert events[-1].object.resource_version == deleted.resource_version


async def test_owner_must_exist(store: Store) -> None:
    with pytest.raises(NotFound, match='Job "orphan": owner_uid "missing"'):
        await store.create(job("orphan", owner_uid="missing"))
    assert await store.current_revision() == 0


async def test_list_filters_orders_and_pages(store: Store) -> None:
    owner = await store.create(StoredObject("CronJob", "cj"))
    made = await store.create_many(
        [
            job(
                f"j{i:02d}",
                labels={"parity": "even" if i % 2 == 0 else "odd", "team": "a" if i < 6 else "b"},
                owner_uid=owner.uid if i % 3 == 0 else None,
            )
            for i in reversed(range(10))
        ]
    )
    await store.create(StoredObject("SubJob", "j00"))
    items, revision = await store.list("Job")
    assert [o.name for o in items] == [f"j{i:02d}" for i in range(10)]
    assert revision == await store.current_revision() == 12
    even = await store.list("Job", labels={"parity": "even"})
    assert [o.name for o in even.items] == ["j00", "j02", "j04", "j06", "j08"]
    both = await store.list("Job", labels={"parity": "even", "team": "b"})
    assert [o.name for o in both.items] == ["j06", "j08"]
    owned = await store.list("Job", owner_uid=owner.uid)
    assert [o.name for o in owned.items] == ["j00", "j03", "j06", "j09"]
    page1 = await store.list("Job", limit=4)
    page2 = await store.list("Job", limit=4, after=page1.items[-1].name)
    assert [o.name for o in page1.items + page2.items] == [f"j{i:02d}" for i in range(8)]
    assert {o.uid for o in made} == {o.uid for o in items}
    assert (await store.list("Job", labels={"parity": "none"})).items == []

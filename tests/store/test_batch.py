"""Batched writes: one transaction each, contiguous revisions, all or nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cronloop.store import (
    AlreadyExists,
    Batch,
    BatchResult,
    Conflict,
    EventType,
    InvalidObject,
    NotFound,
    Store,
    StoredObject,
    new_uid,
)
from tests.store.conftest import OpenStore
from tests.store.helpers import collect, job

FANOUT = 1000


async def _owner(store: Store) -> StoredObject:
    return await store.create(StoredObject("Job", "nightly-1700000000"))


def _subjobs(owner: StoredObject, count: int = FANOUT, prefix: str = "s") -> list[StoredObject]:
    return [
        StoredObject(
            "SubJob",
            f"{prefix}-{i}",
            spec={"region": f"r{i % 7}", "shard": i},
            labels={"job": owner.name},
            owner_uid=owner.uid,
            unique_key=f"{owner.uid}@{prefix}-{i}",
        )
        for i in range(count)
    ]


async def test_fan_out_is_one_transaction_with_contiguous_revisions(store: Store) -> None:
    owner = await _owner(store)
    created = await store.create_many(_subjobs(owner))
    assert [o.resource_version for o in created] == list(range(2, FANOUT + 2))
    assert [o.name for o in created] == [f"s-{i}" for i in range(FANOUT)]
    assert len({o.uid for o in created}) == FANOUT
    assert len({o.created_at for o in created}) == 1  # one commit, one moment
    listed = await store.list("SubJob", labels={"job": owner.name})
    assert sorted(o.uid for o in listed.items) == sorted(o.uid for o in created)
    events = await collect(store, from_revision=1, until_revision=FANOUT + 1)
    assert [e.type for e in events] == [EventType.ADDED] * FANOUT
    assert [e.object for e in events] == created


async def test_clash_at_item_500_leaves_nothing_written(store: Store) -> None:
    owner = await _owner(store)
    await store.create(StoredObject("SubJob", "s-500"))
    before = await store.current_revision()
    with pytest.raises(AlreadyExists, match=r'^SubJob "s-500" already exists$'):
        await store.create_many(_subjobs(owner))
    assert await store.current_revision() == before
    assert [o.name for o in (await store.list("SubJob")).items] == ["s-500"]
    assert (await store.list("SubJob", labels={"job": owner.name})).items == []
    # The revision counter did not move: the next write takes the next number.
    after = await store.create(StoredObject("SubJob", "next"))
    assert after.resource_version == before + 1


async def test_unique_key_clash_in_a_batch_names_the_object(store: Store) -> None:
    owner = await _owner(store)
    batch = _subjobs(owner, 10)
    await store.create(StoredObject("SubJob", "earlier", unique_key=batch[7].unique_key))
    with pytest.raises(AlreadyExists, match='SubJob "s-7": another SubJob already has unique_key'):
        await store.create_many(batch)
    assert len((await store.list("SubJob")).items) == 1


async def test_missing_owner_in_a_batch_leaves_nothing_written(store: Store) -> None:
    owner = await _owner(store)
    batch = _subjobs(owner, 10)
    batch[5] = replace(batch[5], owner_uid="gone")
    with pytest.raises(NotFound, match='SubJob "s-5": owner_uid "gone"'):
        await store.create_many(batch)
    assert (await store.list("SubJob")).items == []


async def test_empty_batches_write_nothing(store: Store) -> None:
    assert await store.create_many([]) == []
    assert await store.update_many([]) == []
    assert await store.current_revision() == 0


async def test_update_many_is_batched_compare_and_set(store: Store) -> None:
    owner = await _owner(store)
    created = await store.create_many(_subjobs(owner))
    dispatched = await store.update_many(
        [replace(o, status={"phase": "Running"}) for o in created], status=True
    )
    assert [o.resource_version for o in dispatched] == list(range(FANOUT + 2, 2 * FANOUT + 2))
    assert all(o.status == {"phase": "Running"} and o.generation == 1 for o in dispatched)
    respecced = await store.update_many([replace(o, spec={"v": 2}) for o in dispatched[:3]])
    assert [o.generation for o in respecced] == [2, 2, 2]
    assert [o.status for o in respecced] == [{"phase": "Running"}] * 3


async def test_stale_item_500_of_1000_leaves_nothing_written(store: Store) -> None:
    owner = await _owner(store)
    created = await store.create_many(_subjobs(owner))
    raced = await store.update_status(replace(created[500], status={"phase": "Cancelled"}))
    before = await store.current_revision()
    with pytest.raises(Conflict, match=r'^SubJob "s-500" has resourceVersion \d+, write expected'):
        await store.update_many(
            [replace(o, status={"phase": "Running"}) for o in created], status=True
        )
    assert await store.current_revision() == before
    listed = (await store.list("SubJob")).items
    assert [o for o in listed if o.status] == [raced]


async def test_update_many_with_a_missing_object_writes_nothing(store: Store) -> None:
    created = await store.create_many([job(f"j{i}") for i in range(5)])
    await store.delete("Job", "j3")
    before = await store.current_revision()
    with pytest.raises(NotFound, match='Job "j3"'):
        await store.update_many([replace(o, status={"x": 1}) for o in created], status=True)
    assert await store.current_revision() == before


async def test_update_many_skips_items_that_change_nothing(store: Store) -> None:
    created = await store.create_many([job(f"j{i}") for i in range(4)])
    result = await store.update_many(
        [replace(o, status={"x": 1}) if i % 2 else o for i, o in enumerate(created)], status=True
    )
    assert [o.resource_version for o in result] == [1, 5, 3, 6]
    assert await store.current_revision() == 6


async def test_kept_uids_let_a_batch_hold_an_owner_and_what_it_owns(store: Store) -> None:
    run = replace(job("run"), uid=new_uid())
    subs = [StoredObject("SubJob", f"run-{t}", owner_uid=run.uid, uid=new_uid()) for t in "ab"]
    stored = await store.create_many([run, *subs], keep_uids=True)
    assert [o.uid for o in stored] == [run.uid, *(s.uid for s in subs)]
    assert [o.owner_uid for o in stored[1:]] == [run.uid, run.uid]
    # The cascade knows them as owned.
    await store.delete("Job", "run")
    assert (await store.list("SubJob")).items == []


async def test_kept_uids_are_checked_and_nothing_is_written(store: Store) -> None:
    owner = replace(job("owner"), uid=new_uid())
    owned = StoredObject("SubJob", "owned", owner_uid=owner.uid, uid=new_uid())
    with pytest.raises(InvalidObject, match="owner comes after it"):
        await store.create_many([owned, owner], keep_uids=True)
    good = new_uid()
    # Only the canonical form str(uuid.UUID(...)) gives: not upper case, braces, or no dashes.
    for bad in ("not-a-uuid", good.upper(), f"{{{good}}}", good.replace("-", ""), f"{good}\n"):
        with pytest.raises(InvalidObject, match="uid"):
            await store.create_many([replace(job("bad"), uid=bad)], keep_uids=True)
    with pytest.raises(AlreadyExists):
        await store.create_many([owner, replace(job("twin"), uid=owner.uid)], keep_uids=True)
    created = await store.create(job("first"))
    with pytest.raises(AlreadyExists, match="uid"):
        await store.create_many([replace(job("second"), uid=created.uid)], keep_uids=True)
    assert [o.name for o in (await store.list("Job")).items] == ["first"]
    assert (await store.list("SubJob")).items == []


async def test_without_keep_uids_a_batch_owner_is_not_found(store: Store) -> None:
    owner = replace(job("owner"), uid=new_uid())
    owned = StoredObject("SubJob", "owned", owner_uid=owner.uid)
    with pytest.raises(NotFound):
        await store.create_many([owner, owned])


# ---- commit: creates, updates, status updates and deletes in one transaction ------------------


async def test_commit_writes_a_run_its_subjobs_and_the_owner_cursor_at_once(store: Store) -> None:
    cron = await store.create(StoredObject("CronJob", "nightly", spec={"schedule": "@daily"}))
    old = await store.create(job("nightly-1"))
    run = replace(job("nightly-2", owner_uid=cron.uid), uid=new_uid())
    subs = [
        StoredObject("SubJob", f"nightly-2-{t}", owner_uid=run.uid, uid=new_uid()) for t in "ab"
    ]
    cursor = replace(cron, status={"lastScheduleTime": "2026-01-02T00:00:00Z"})
    result = await store.commit(
        Batch(
            creates=[run, *subs],
            status_updates=[cursor],
            deletes=[("Job", "nightly-1"), ("Job", "never-was")],
            keep_uids=True,
        )
    )
    assert [o.name for o in result.created] == ["nightly-2", "nightly-2-a", "nightly-2-b"]
    assert [o.resource_version for o in result.created] == [3, 4, 5]
    assert result.status_updated[0].status == cursor.status
    assert result.status_updated[0].resource_version == 6
    assert [(o.name, o.resource_version) for o in result.deleted] == [("nightly-1", 7)]
    assert result.updated == []
    events = await collect(store, from_revision=2, until_revision=7)
    assert [(e.type, e.object.name) for e in events] == [
        (EventType.ADDED, "nightly-2"),
        (EventType.ADDED, "nightly-2-a"),
        (EventType.ADDED, "nightly-2-b"),
        (EventType.MODIFIED, "nightly"),
        (EventType.DELETED, old.name),
    ]
    assert len({o.created_at for o in result.created}) == 1


async def test_a_stale_update_in_a_commit_leaves_nothing_written(store: Store) -> None:
    cron = await store.create(StoredObject("CronJob", "nightly"))
    await store.update_status(replace(cron, status={"raced": True}))
    keep = await store.create(job("keep"))
    before = await store.current_revision()
    with pytest.raises(Conflict, match='CronJob "nightly"'):
        await store.commit(
            Batch(
                creates=[job("nightly-2")],
                status_updates=[replace(cron, status={"cursor": 1})],
                deletes=[("Job", "keep")],
            )
        )
    assert await store.current_revision() == before
    assert [o.name for o in (await store.list("Job")).items] == ["keep"]
    assert (await store.get("Job", "keep")) == keep
    assert (await store.get("CronJob", "nightly")).status == {"raced": True}


async def test_commit_spec_and_status_updates_of_different_objects(store: Store) -> None:
    a, b = await store.create_many([job("a"), job("b")])
    result = await store.commit(
        Batch(
            updates=[replace(a, spec={"v": 2}, labels={"tier": "gold"})],
            status_updates=[replace(b, status={"phase": "Running"})],
        )
    )
    assert result.updated[0].generation == 2
    assert result.updated[0].labels == {"tier": "gold"}
    assert result.status_updated[0].status == {"phase": "Running"}
    assert result.status_updated[0].generation == 1
    assert [o.name for o in (await store.list("Job", labels={"tier": "gold"})).items] == ["a"]


async def test_an_object_twice_in_a_commit_is_refused_before_writing(store: Store) -> None:
    a = await store.create(job("a"))
    with pytest.raises(InvalidObject, match=r'Job "a".*appears twice'):
        await store.commit(
            Batch(updates=[replace(a, spec={"v": 2})], status_updates=[replace(a, status={"x": 1})])
        )
    with pytest.raises(InvalidObject, match="appears twice"):
        await store.commit(Batch(status_updates=[a], deletes=[("Job", "a")]))
    with pytest.raises(InvalidObject, match="deletes"):
        await store.commit(Batch(deletes=["Job"]))  # type: ignore[list-item]
    assert await store.current_revision() == 1


async def test_an_empty_commit_writes_nothing(store: Store) -> None:
    assert await store.commit(Batch()) == BatchResult()
    assert not Batch()
    assert Batch(deletes=[("Job", "x")])
    assert await store.commit(Batch(deletes=[("Job", "missing")])) == BatchResult()
    assert await store.current_revision() == 0


async def test_values_with_nul_characters_survive_batched_writes(store: Store) -> None:
    # Batches travel to SQLite as one JSON array; a NUL inside a value would come back cut
    # short there, so such a batch must still store every character.
    objs = [
        StoredObject("Job", f"nul-{i}", labels={"k\x00": f"v\x00{i}"}, unique_key=f"key\x00{i}")
        for i in range(50)
    ]
    created = await store.create_many(objs)
    assert [dict(o.labels) for o in created] == [{"k\x00": f"v\x00{i}"} for i in range(50)]
    selected = await store.list("Job", labels={"k\x00": "v\x0017"})
    assert [o.name for o in selected.items] == ["nul-17"]
    with pytest.raises(AlreadyExists, match="unique_key"):
        await store.create(StoredObject("Job", "twin", unique_key="key\x0017"))
    updated = await store.update_many(
        [replace(o, status={"note": "a\x00b"}) for o in created], status=True
    )
    assert all(o.status == {"note": "a\x00b"} for o in updated)
    assert (await store.get("Job", "nul-3")).status == {"note": "a\x00b"}


async def test_created_objects_are_returned_exactly_as_a_read_finds_them(
    open_store: OpenStore,
) -> None:
    # The writer answers a create with revisions only; the rest is what was sent.
    store = await open_store()
    owner = StoredObject("Job", "nightly-1", spec={"b": [1, {"x": None}], "a": "é"}, uid=new_uid())
    subjob = StoredObject(
        "SubJob",
        "nightly-1-eu",
        spec={"target": "eu"},
        status={"attempts": [{"number": 1}]},
        labels={"job": "nightly-1"},
        owner_uid=owner.uid,
        unique_key="nightly-1@eu",
        uid=new_uid(),
    )
    kept = (await store.commit(Batch(creates=[owner, subjob], keep_uids=True))).created
    fresh = await store.create_many([StoredObject("CronJob", "hourly", labels={"team": "a"})])
    other = await open_store()  # reads the database, not this store's memory
    for obj in [*kept, *fresh]:
        assert obj == await other.get(obj.kind, obj.name)
    assert [o.uid for o in kept] == [owner.uid, subjob.uid]
    assert {o.generation for o in [*kept, *fresh]} == {1}
    assert all(o.created_at == o.updated_at is not None for o in [*kept, *fresh])

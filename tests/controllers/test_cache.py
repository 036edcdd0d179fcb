"""The controllers' informer cache: versions never go backwards, deletions stick, and the
store view refreshes what a failed compare-and-set read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronloop.controllers import CachedStore, ObjectCache
from cronloop.store import Conflict, StoredObject, open_store


def _obj(name: str, version: int, *, owner: str | None = None, uid: str = "u") -> StoredObject:
    return StoredObject(
        "Job",
        name,
        status={"v": version},
        owner_uid=owner,
        uid=f"{uid}-{name}",
        resource_version=version,
    )


# One history: (name, deleted?) per revision 1..n; a name re-created after a delete is fine.
_histories = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans()), min_size=1, max_size=30
)


def _events(history: list[tuple[str, bool]]) -> list[tuple[StoredObject, bool]]:
    """The store's change feed for ``history`` (deletes only of live objects)."""
    live: set[str] = set()
    events = []
    for revision, (name, delete) in enumerate(history, start=1):
        if delete and name in live:
            live.discard(name)
            events.append((_obj(name, revision), True))
        else:
            live.add(name)
            events.append((_obj(name, revision), False))
    return events


def _apply(cache: ObjectCache, obj: StoredObject, deleted: bool) -> None:
    if deleted:
        cache.forget(obj)
    else:
        cache.observe(obj)


@settings(max_examples=300, deadline=None)
@given(history=_histories, early=st.data())
def test_write_through_and_feed_in_any_overlap_end_in_the_latest_state(
    history: list[tuple[str, bool]], early: st.DataObject
) -> None:
    events = _events(history)
    cache = ObjectCache(["Job"])
    # Writes are recorded as they return (in revision order, some of them), the feed then
    # delivers everything in revision order, with the early ones arriving again.
    written = early.draw(st.lists(st.sampled_from(range(len(events))), unique=True))
    seen: dict[str, int] = {}
    for index in [*sorted(written), *range(len(events))]:
        obj, deleted = events[index]
        _apply(cache, obj, deleted)
        current = cache.get("Job", obj.name)
        if current is not None:
            # Never backwards: what is cached is at least as new as anything cached before.
            assert current.resource_version >= seen.get(obj.name, 0)
            seen[obj.name] = current.resource_version
    expected: dict[str, StoredObject] = {}
    for obj, deleted in events:
        if deleted:
            expected.pop(obj.name, None)
        else:
            expected[obj.name] = obj
    assert {o.name: o for o in cache.objects("Job")} == expected


def test_a_late_event_does_not_resurrect_a_deleted_object() -> None:
    cache = ObjectCache(["Job"])
    cache.observe(_obj("a", 1))
    cache.forget(_obj("a", 3))  # deleted at revision 3, written through
    cache.observe(_obj("a", 2))  # the feed catching up
    assert cache.get("Job", "a") is None


def test_owned_index_follows_writes_and_deletes() -> None:
    cache = ObjectCache(["Job", "SubJob"])
    cache.observe(_obj("x", 1, owner="p"))
    cache.observe(_obj("y", 2, owner="p"))
    cache.observe(_obj("z", 3, owner="q"))
    assert [o.name for o in cache.owned("Job", "p")] == ["x", "y"]
    cache.forget(_obj("x", 4, owner="p"))
    assert [o.name for o in cache.owned("Job", "p")] == ["y"]
    assert cache.owned("SubJob", "p") == []


def test_a_listing_drops_what_it_lacks_but_keeps_newer_writes() -> None:
    cache = ObjectCache(["Job"])
    cache.observe(_obj("gone", 1))
    cache.observe(_obj("fresh", 9))  # written through after the listing's snapshot
    cache.replace("Job", [_obj("kept", 2)], revision=5)
    assert sorted(o.name for o in cache.objects("Job")) == ["fresh", "kept"]
    assert cache.synced("Job")


async def test_a_stale_compare_and_set_refreshes_the_cache(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "c.db")
    try:
        view = CachedStore(store, ObjectCache(["Job"]))
        created = await view.create(StoredObject("Job", "j"))
        # Another writer moves the object on behind the cache's back.
        await store.update_status(dataclasses.replace(created, status={"by": "other"}))
        with pytest.raises(Conflict):
            await view.update_status(dataclasses.replace(created, status={"by": "us"}))
        fresh = await view.get("Job", "j")
        assert fresh.status == {"by": "other"}
        retried = await view.update_status(dataclasses.replace(fresh, status={"by": "us"}))
        assert (await view.get("Job", "j")) == retried
    finally:
        await store.close()

"""The change feed: order, no gaps, no duplicates, live wake-up, list+watch, compaction."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cronloop.store import (
    EventType,
    Expired,
    NotFound,
    Store,
    StoreClosed,
    StoredObject,
    WatchEvent,
)
from tests.store.conftest import OpenStore
from tests.store.helpers import collect, job


async def _random_writes(store: Store, rng: random.Random, count: int, tag: str) -> None:
    """``count`` seeded creates, status updates and deletes on this store's own objects."""
    live: dict[str, StoredObject] = {}
    for step in range(count):
        roll = rng.random()
        if not live or roll < 0.5:
            obj = await store.create(job(f"{tag}-{step}", labels={"writer": tag}))
            live[obj.name] = obj
        elif roll < 0.85:
            name = rng.choice(sorted(live))
            live[name] = await store.update_status(replace(live[name], status={"step": step}))
        else:
            name = rng.choice(sorted(live))
            await store.delete("Job", name)
            del live[name]


def _replay(start: dict[str, StoredObject], events: list[WatchEvent]) -> dict[str, StoredObject]:
    state = dict(start)
    for event in events:
        if event.type is EventType.DELETED:
            del state[event.object.name]
        else:
            state[event.object.name] = event.object
    return state


def _assert_exact_sequence(events: list[WatchEvent], first: int, last: int) -> None:
    assert [e.revision for e in events] == list(range(first, last + 1))
    assert all(e.object.resource_version == e.revision for e in events)


@pytest.mark.parametrize("seed", range(3))
async def test_concurrent_writers_are_seen_in_order_without_gaps(
    open_store: OpenStore, seed: int
) -> None:
    one, two = await open_store(), await open_store()
    watcher = asyncio.ensure_future(collect(one, from_revision=0, until_revision=10**9))
    rng = random.Random(seed)
    async with asyncio.timeout(30):
        await asyncio.gather(
            _random_writes(one, random.Random(rng.random()), 40, "a"),
            _random_writes(one, random.Random(rng.random()), 40, "b"),
            _random_writes(two, random.Random(rng.random()), 40, "c"),
        )
    final = await one.current_revision()
    watcher.cancel()
    seen = await collect(one, from_revision=0, until_revision=final)
    _assert_exact_sequence(seen, 1, final)
    listed = await one.list("Job")
    assert _replay({}, seen) == {o.name: o for o in listed.items}


@pytest.mark.parametrize("seed", range(3))
async def test_a_live_watcher_gets_local_and_foreign_writes_in_order(
    open_store: OpenStore, seed: int
) -> None:
    """Local commits come from the store's memory, the other store's from the database: the
    live feed must still be every revision once, in order."""
    one, two = await open_store(), await open_store()
    seen: list[WatchEvent] = []
    progressed = asyncio.Event()

    async def watch() -> None:
        async for event in one.watch(from_revision=0):
            seen.append(event)
            progressed.set()

    watcher = asyncio.ensure_future(watch())
    rng = random.Random(seed)
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(
                _random_writes(one, random.Random(rng.random()), 40, "a"),
                _random_writes(two, random.Random(rng.random()), 40, "c"),
            )
            final = await one.current_revision()
            while not seen or seen[-1].revision < final:
                progressed.clear()
                await progressed.wait()
    finally:
        watcher.cancel()
    _assert_exact_sequence(seen, 1, final)
    listed = await one.list("Job")
    assert _replay({}, seen) == {o.name: o for o in listed.items}


async def test_every_store_sees_the_same_feed(open_store: OpenStore) -> None:
    one, two = await open_store(), await open_store()
    feeds = [
        asyncio.ensure_future(collect(store, from_revision=0, until_revision=60))
        for store in (one, two)
    ]
    async with asyncio.timeout(30):
        await asyncio.gather(
            _random_writes(one, random.Random(1), 30, "a"),
            _random_writes(two, random.Random(2), 30, "b"),
        )
        first, second = await asyncio.gather(*feeds)
    _assert_exact_sequence(first, 1, 60)
    assert first == second


async def test_own_writes_wake_watchers_without_polling(open_store: OpenStore) -> None:
    # A poll interval of an hour: only the in-process wake-up can deliver within the timeout.
    store = await open_store(poll_interval=3600)
    got_first = asyncio.Event()

    async def watch() -> list[WatchEvent]:
        seen: list[WatchEvent] = []
        async for event in store.watch(from_revision=0):
            seen.append(event)
            got_first.set()
            if len(seen) == 3:
                return seen
        raise AssertionError("the feed ended")

    watcher = asyncio.ensure_future(watch())
    async with asyncio.timeout(10):
        await store.create(job("a"))
        await got_first.wait()  # the watcher is now parked on the wake-up, not polling
        b = await store.create(job("b"))
        await store.update_status(replace(b, status={"x": 1}))
        seen = await watcher
    assert [(e.type, e.object.name) for e in seen] == [
        (EventType.ADDED, "a"),
        (EventType.ADDED, "b"),
        (EventType.MODIFIED, "b"),
    ]


async def test_list_then_watch_from_its_revision_is_exact(store: Store) -> None:
    listed_midway = asyncio.Event()
    half = asyncio.Event()
    total = 120

    async def writer() -> None:
        rng = random.Random(7)
        live: list[StoredObject] = []
        for step in range(total):
            if live and rng.random() < 0.4:
                index = rng.randrange(len(live))
                live[index] = await store.update_status(replace(live[index], status={"s": step}))
            else:
                live.append(await store.create(job(f"j{step}")))
            if step == total // 2:
                half.set()
                await listed_midway.wait()

    async with asyncio.timeout(30):
        task = asyncio.ensure_future(writer())
        await half.wait()
        # Writes keep coming while the list is read and until the watch is running.
        items, revision = await store.list("Job")
        listed_midway.set()
        await task
        final = await store.current_revision()
        events = await collect(store, from_revision=revision, until_revision=final)
    _assert_exact_sequence(events, revision + 1, final)
    state = _replay({o.name: o for o in items}, events)
    assert state == {o.name: o for o in (await store.list("Job")).items}


async def test_watch_without_revision_starts_at_first_iteration(store: Store) -> None:
    await store.create(job("old"))
    first = asyncio.ensure_future(anext(aiter(store.watch())))
    async with asyncio.timeout(10):
        # Keep writing until the watcher (started at some revision >= 1) reports one.
        step = 0
        while not first.done():
            await store.create(job(f"new-{step}"))
            step += 1
        event = await first
    assert event.object.name.startswith("new-")
    assert event.revision > 1


async def test_watch_filters_kinds(store: Store) -> None:
    cronjob = await store.create(StoredObject("CronJob", "cj"))
    await store.create_many([job(f"j{i}", owner_uid=cronjob.uid) for i in range(3)])
    await store.create(StoredObject("SubJob", "s"))
    await store.delete("CronJob", "cj")
    final = await store.current_revision()
    seen = await collect(store, kinds=["CronJob", "SubJob"], until_revision=final)
    assert [(e.type, e.object.kind, e.revision) for e in seen] == [
        (EventType.ADDED, "CronJob", 1),
        (EventType.ADDED, "SubJob", 5),
        (EventType.DELETED, "CronJob", final),
    ]


async def test_watch_pages_through_long_history(store: Store) -> None:
    await store.create_many([job(f"j{i}") for i in range(1234)])
    seen = await collect(store, until_revision=1234)
    _assert_exact_sequence(seen, 1, 1234)


async def test_compaction_expires_old_start_points(store: Store) -> None:
    await store.create_many([job(f"j{i}") for i in range(10)])
    assert await store.compact(6) == 5
    assert await store.compact(4) == 0  # older than the last compaction: no-op
    with pytest.raises(Expired, match="cannot watch from revision 4: history before revision 6"):
        await collect(store, from_revision=4, until_revision=10)
    seen = await collect(store, from_revision=5, until_revision=10)
    _assert_exact_sequence(seen, 6, 10)
    # Objects are untouched by compaction.
    assert len((await store.list("Job")).items) == 10
    assert await store.compact(11) == 5
    assert await collect(store, from_revision=10, until_revision=10) == []


async def test_a_watcher_that_falls_behind_compaction_expires(store: Store) -> None:
    await store.create_many([job(f"j{i}") for i in range(3)])
    feed = aiter(store.watch(from_revision=0))
    async with asyncio.timeout(10):
        assert (await anext(feed)).revision == 1
        await store.create_many([job(f"k{i}") for i in range(7)])
        await store.compact(9)
        # Events already read stay valid; the next read finds its history gone.
        assert [(await anext(feed)).revision for _ in range(2)] == [2, 3]
        with pytest.raises(Expired):
            await anext(feed)


async def test_close_ends_watchers_and_refuses_calls(open_store: OpenStore) -> None:
    store = await open_store(poll_interval=3600)
    await store.create(job("a"))
    started = asyncio.Event()

    async def watch() -> None:
        async for _ in store.watch(from_revision=0):
            started.set()

    watcher = asyncio.ensure_future(watch())
    async with asyncio.timeout(10):
        await started.wait()
        await store.close()
        with pytest.raises(StoreClosed):
            await watcher
    with pytest.raises(StoreClosed):
        await store.get("Job", "a")
    await store.close()  # idempotent


async def test_deleted_event_carries_last_state(store: Store) -> None:
    created = await store.create(job("a"))
    updated = await store.update_status(replace(created, status={"phase": "Succeeded"}))
    await store.delete("Job", "a")
    seen = await collect(store, until_revision=3)
    deleted = seen[-1]
    assert deleted.type is EventType.DELETED
    assert deleted.object == replace(updated, resource_version=3)
    with pytest.raises(NotFound):
        await store.get_by_uid(created.uid)


operations = st.lists(
    st.tuples(st.sampled_from(["create", "status", "spec", "delete", "batch"]), st.integers(0, 7)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
async def test_replaying_the_feed_rebuilds_the_state(
    store: Store, ops: list[tuple[str, int]]
) -> None:
    """Any sequence of writes: the feed is contiguous and replaying it gives list()'s state."""
    start_items, start = await store.list("Job")
    for index, (op, n) in enumerate(ops):
        name = f"p{n}"
        try:
            current = await store.get("Job", name)
        except NotFound:
            current = None
        if op == "batch":
            await store.create_many([job(f"b{index}-{i}-{start}") for i in range(n + 1)])
        elif current is None:
            await store.create(job(name, labels={"n": str(n)}))
        elif op == "status":
            await store.update_status(replace(current, status={"v": start}))
        elif op == "spec":
            await store.update(replace(current, spec={"v": start}))
        elif op == "delete":
            await store.delete("Job", name)
    final = await store.current_revision()
    seen = await collect(store, from_revision=start, until_revision=final)
    _assert_exact_sequence(seen, start + 1, final)
    state = _replay({o.name: o for o in start_items}, seen)
    assert state == {o.name: o for o in (await store.list("Job")).items}

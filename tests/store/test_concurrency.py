"""Racing writers: exactly one creator wins a name or unique key, exactly one CAS wins.

The racers run on two stores over one database (like two scheduler processes) as well as
several tasks on each store, so the database, not an in-process lock, has to decide.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from cronloop.store import AlreadyExists, Conflict, StoredObject
from tests.store.conftest import OpenStore

RACERS = 12


async def _race(*calls: asyncio.Future[StoredObject]) -> list[StoredObject | BaseException]:
    async with asyncio.timeout(30):
        return await asyncio.gather(*calls, return_exceptions=True)


async def test_one_of_many_creators_wins_a_unique_key(open_store: OpenStore) -> None:
    stores = [await open_store(), await open_store()]
    key = "cronjob-uid@2026-11-23T16:00:00Z"
    results = await _race(
        *(
            asyncio.ensure_future(
                stores[i % 2].create(StoredObject("Job", f"scheduler-{i}", unique_key=key))
            )
            for i in range(RACERS)
        )
    )
    winners = [r for r in results if isinstance(r, StoredObject)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert len(losers) == RACERS - 1
    assert all(isinstance(e, AlreadyExists) and e.field == "unique_key" for e in losers)
    items = (await stores[1].list("Job")).items
    assert items == winners
    assert await stores[0].current_revision() == 1


async def test_one_of_many_creators_wins_a_name(open_store: OpenStore) -> None:
    stores = [await open_store(), await open_store()]
    results = await _race(
        *(
            asyncio.ensure_future(stores[i % 2].create(StoredObject("Job", "same", spec={"by": i})))
            for i in range(RACERS)
        )
    )
    winners = [r for r in results if isinstance(r, StoredObject)]
    assert len(winners) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if r not in winners)
    assert await stores[0].get("Job", "same") == winners[0]


async def test_one_of_many_compare_and_sets_wins(open_store: OpenStore) -> None:
    stores = [await open_store(), await open_store()]
    created = await stores[0].create(StoredObject("Job", "j"))
    results = await _race(
        *(
            asyncio.ensure_future(
                stores[i % 2].update_status(replace(created, status={"dispatcher": i}))
            )
            for i in range(RACERS)
        )
    )
    winners = [r for r in results if isinstance(r, StoredObject)]
    assert len(winners) == 1
    conflicts = [r for r in results if isinstance(r, Conflict)]
    assert len(conflicts) == RACERS - 1
    assert all((c.actual, c.expected) == (2, 1) for c in conflicts)
    assert await stores[1].get("Job", "j") == winners[0]


@pytest.mark.parametrize("seed", range(3))
async def test_revisions_stay_contiguous_under_racing_batches(
    open_store: OpenStore, seed: int
) -> None:
    stores = [await open_store(), await open_store()]
    sizes = [(seed * 7 + i * 13) % 40 + 1 for i in range(10)]

    async def batch(i: int, size: int) -> list[StoredObject]:
        return await stores[i % 2].create_many(
            [StoredObject("SubJob", f"b{i}-{n}") for n in range(size)]
        )

    async with asyncio.timeout(30):
        batches = await asyncio.gather(*(batch(i, size) for i, size in enumerate(sizes)))
    revisions = sorted(o.resource_version for b in batches for o in b)
    assert revisions == list(range(1, sum(sizes) + 1))
    for created in batches:  # each batch took one contiguous range
        versions = [o.resource_version for o in created]
        assert versions == list(range(versions[0], versions[0] + len(created)))

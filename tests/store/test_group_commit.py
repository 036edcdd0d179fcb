"""SQLite writer thread: writes queued together commit together, yet each fails alone."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from cronloop.store import AlreadyExists, Conflict, SQLiteStore, StoredObject
from tests.store.helpers import collect, job


async def test_queued_writes_share_a_commit_and_fail_alone(tmp_path: Path) -> None:
    async with await SQLiteStore.open(tmp_path / "group.db") as store:
        taken = await store.create(job("taken"))
        await store.update_status(replace(taken, status={"phase": "Running"}))
        gate = threading.Event()
        # Hold the writer thread so that the next writes queue up behind it as one group.
        blocker = asyncio.ensure_future(store._write(lambda _conn: gate.wait(10)))
        writes = [
            asyncio.ensure_future(store.create(job("a"))),
            asyncio.ensure_future(store.create(job("taken"))),
            asyncio.ensure_future(store.create_many([job("b"), job("c")])),
            asyncio.ensure_future(store.update_status(replace(taken, status={"x": 1}))),
            asyncio.ensure_future(store.create(job("d"))),
        ]
        await asyncio.sleep(0)  # one loop step: every task queues its write, none can run
        gate.set()
        async with asyncio.timeout(10):
            assert await blocker is True
            results = await asyncio.gather(*writes, return_exceptions=True)
        a, clash, batch, stale, d = results
        assert isinstance(clash, AlreadyExists)
        assert isinstance(stale, Conflict)
        assert isinstance(a, StoredObject)
        assert isinstance(d, StoredObject)
        assert isinstance(batch, list)
        # The failed writes took no revisions; the others are contiguous, in queue order.
        assert [a.resource_version, *(o.resource_version for o in batch), d.resource_version] == [
            3,
            4,
            5,
            6,
        ]
        events = await collect(store, from_revision=2, until_revision=6)
        assert [e.object.name for e in events] == ["a", "b", "c", "d"]


async def test_a_cancelled_caller_does_not_undo_its_write(tmp_path: Path) -> None:
    async with await SQLiteStore.open(tmp_path / "cancel.db") as store:
        gate = threading.Event()
        blocker = asyncio.ensure_future(store._write(lambda _conn: gate.wait(10)))
        write = asyncio.ensure_future(store.create(job("kept")))
        await asyncio.sleep(0)  # the write is queued behind the blocker
        write.cancel()
        gate.set()
        async with asyncio.timeout(10):
            await blocker
            with pytest.raises(asyncio.CancelledError):
                await write
            events = await collect(store, until_revision=1)
        assert [e.object.name for e in events] == ["kept"]
        assert (await store.get("Job", "kept")).resource_version == 1


async def test_open_fails_cleanly_when_the_database_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(OperationalError, match="unable to open database"):
        await SQLiteStore.open(tmp_path / "missing-dir" / "x.db")


async def test_stored_object_round_trips_through_a_group(tmp_path: Path) -> None:
    async with await SQLiteStore.open(tmp_path / "rt.db") as store:
        made = await asyncio.gather(
            *(store.create(StoredObject("Job", f"j{i}")) for i in range(50))
        )
        assert sorted(o.resource_version for o in made) == list(range(1, 51))
        assert sorted(o.name for o in (await store.list("Job")).items) == sorted(
            o.name for o in made
        )

"""SQLite writer thread: writes queued together commit together, yet each fails alone."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from cronloop.store import AlreadyExists, Conflict, SQLiteStore, StoredObject, _ops
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


async def test_batches_queued_together_run_as_one_yet_answer_each_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches_run: list[int] = []
    commit_batch = _ops.commit_batch

    def counted(conn: Connection, rows: _ops.BatchRows, now: int) -> Any:
        batches_run.append(len(rows.creates) + len(rows.status_updates))
        return commit_batch(conn, rows, now)

    monkeypatch.setattr(_ops, "commit_batch", counted)
    async with await SQLiteStore.open(tmp_path / "combined.db") as store:
        first, second = await store.create_many([job("one"), job("two")])
        gate = threading.Event()
        blocker = asyncio.ensure_future(store._write(lambda _conn: gate.wait(10)))
        writes = [
            asyncio.ensure_future(store.create_many([job(f"x{i}"), job(f"y{i}")])) for i in range(5)
        ]
        status = asyncio.ensure_future(store.update_status(replace(first, status={"n": 1})))
        # The same object again, from the same stale read: it must conflict, as it would
        # one write after the other.
        again = asyncio.ensure_future(store.update_status(replace(first, status={"n": 2})))
        other = asyncio.ensure_future(store.update_status(replace(second, status={"n": 3})))
        await asyncio.sleep(0)
        gate.set()
        async with asyncio.timeout(10):
            await blocker
            batches = await asyncio.gather(*writes)
            done = await status
            with pytest.raises(Conflict):
                await again
            moved = await other
        versions = [o.resource_version for batch in batches for o in batch]
        assert versions == list(range(3, 13))
        assert [[o.name for o in batch] for batch in batches] == [
            [f"x{i}", f"y{i}"] for i in range(5)
        ]
        assert (done.resource_version, done.status) == (13, {"n": 1})
        assert (moved.resource_version, moved.status) == (14, {"n": 3})
        events = await collect(store, from_revision=2, until_revision=14)
        assert [e.revision for e in events] == list(range(3, 15))


async def test_batches_of_disjoint_objects_share_one_set_of_statements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    commit_batch = _ops.commit_batch

    def counted(conn: Connection, rows: _ops.BatchRows, now: int) -> Any:
        sizes.append(len(rows.creates) + len(rows.status_updates))
        return commit_batch(conn, rows, now)

    monkeypatch.setattr(_ops, "commit_batch", counted)
    async with await SQLiteStore.open(tmp_path / "disjoint.db") as store:
        made = await store.create_many([job(f"s{i}") for i in range(4)])
        sizes.clear()
        gate = threading.Event()
        blocker = asyncio.ensure_future(store._write(lambda _conn: gate.wait(10)))
        writes = [asyncio.ensure_future(store.create_many([job(f"n{i}")])) for i in range(3)] + [
            asyncio.ensure_future(store.update_status(replace(o, status={"i": i})))
            for i, o in enumerate(made)
        ]
        await asyncio.sleep(0)
        gate.set()
        async with asyncio.timeout(10):
            await blocker
            results = await asyncio.gather(*writes)
    assert sizes == [7]  # seven writes, one batch of statements
    created = [result[0] for result in results[:3] if isinstance(result, list)]
    updated = [result for result in results[3:] if isinstance(result, StoredObject)]
    assert [o.name for o in created] == ["n0", "n1", "n2"]
    assert [o.resource_version for o in created] == [5, 6, 7]
    assert [(o.resource_version, o.status) for o in updated] == [
        (8 + i, {"i": i}) for i in range(4)
    ]

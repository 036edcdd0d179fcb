"""Durability: data survives reopening, and a writer killed with SIGKILL leaves no damage."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from cronloop.store import NotFound, SQLiteStore, StoredObject
from tests.store.conftest import OpenStore
from tests.store.helpers import collect, job

ROOT = Path(__file__).resolve().parents[2]


async def test_everything_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "reopen.db"
    async with await SQLiteStore.open(path) as store:
        owner = await store.create(StoredObject("CronJob", "cj", spec={"schedule": "@daily"}))
        jobs = await store.create_many(
            [job(f"j{i}", owner_uid=owner.uid, labels={"cj": "cj"}) for i in range(5)]
        )
        updated = await store.update_status(replace(jobs[0], status={"phase": "Running"}))
        await store.delete("Job", "j4")
        await store.compact(3)
        before = (await store.list("Job")).items
    async with await SQLiteStore.open(path, synchronous="FULL") as store:
        assert await store.current_revision() == 8
        assert (await store.list("Job")).items == before
        assert await store.get("Job", "j0") == updated
        assert (await store.list("Job", labels={"cj": "cj"})).items == before
        events = await collect(store, from_revision=2, until_revision=8)
        assert [e.revision for e in events] == list(range(3, 9))
        nxt = await store.create(job("after"))
        assert nxt.resource_version == 9


async def test_other_store_reads_committed_writes(open_store: OpenStore) -> None:
    writer, reader = await open_store(), await open_store()
    created = await writer.create(job("a"))
    assert await reader.get("Job", "a") == created
    await writer.delete("Job", "a")
    with pytest.raises(NotFound):
        await reader.get("Job", "a")


def _check_integrity(path: Path) -> int:
    """Assert the invariants a crash must never break; return the revision found."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        (revision, compacted_before) = conn.execute(
            "SELECT revision, compacted_before FROM store_meta"
        ).fetchone()
        assert compacted_before == 1
        revisions = [r for (r,) in conn.execute("SELECT revision FROM events ORDER BY revision")]
        assert revisions == list(range(1, revision + 1)), "revisions must be contiguous"
        # Every object's current version has its event, holding the very same state.
        missing = conn.execute(
            "SELECT o.kind, o.name FROM objects o LEFT JOIN events e "
            "ON e.revision = o.resource_version AND e.uid = o.uid "
            "AND e.spec = o.spec AND e.status = o.status AND e.labels = o.labels "
            "WHERE e.revision IS NULL"
        ).fetchall()
        assert missing == []
        # Fan-outs are all or nothing; only the newest job may still lack its sub-jobs
        # (the job and its sub-jobs are two transactions).
        sizes = {
            name: orjson.loads(spec)["size"]
            for name, spec in conn.execute("SELECT name, spec FROM objects WHERE kind = 'Job'")
        }
        counts = Counter(
            name
            for (name,) in conn.execute(
                "SELECT j.name FROM objects s JOIN objects j ON s.owner_uid = j.uid "
                "WHERE s.kind = 'SubJob'"
            )
        )
        newest = max(sizes, key=lambda name: int(name.split("-")[1]), default=None)
        for name, size in sizes.items():
            assert counts[name] == size or (counts[name] == 0 and name == newest), name
        # A status round covers a whole batch or none of it.
        rounds: dict[str, set[str]] = {}
        for labels, status in conn.execute(
            "SELECT labels, status FROM objects WHERE kind = 'SubJob'"
        ):
            rounds.setdefault(orjson.loads(labels)["batch"], set()).add(status)
        assert all(len(statuses) == 1 for statuses in rounds.values()), rounds
        return int(revision)
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
async def test_sigkill_mid_write_leaves_a_consistent_database(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "crash.db"
    kill_after = random.Random(seed).randint(5, 60)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.store.crash_writer",
        str(path),
        str(seed),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(40):
            for _ in range(kill_after):
                line = await process.stdout.readline()
                assert line, "the writer died on its own"
    finally:
        process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(10):
            await process.wait()
    assert process.returncode == -signal.SIGKILL
    revision = _check_integrity(path)
    assert revision > 0
    async with await SQLiteStore.open(path) as store:  # reopens (recovering the WAL)
        assert await store.current_revision() == revision
        marker = await store.create(StoredObject("Marker", "after-crash"))
        assert marker.resource_version == revision + 1
    _check_integrity(path)

"""Benchmark suite ``store_writes``: the SQLite store against raw ``sqlite3`` doing the same work.

Every baseline writes the rows the store writes (object, label and event rows (the events by the
schema's triggers, for both), the revision
bump) with the same PRAGMAs (WAL, ``synchronous=NORMAL``, foreign keys) and encodes JSON with
orjson too, so each ratio is the cost of the store layer itself: validation, SQLAlchemy Core,
the hop to the writer thread, building the returned objects.

Rows:
- batched create of 1,000 objects (``create_many``) vs one ``executemany`` transaction;
- single create + commit latency vs one raw insert transaction;
- CAS ``update_status`` throughput vs raw ``UPDATE ... WHERE resource_version = ?``;
- concurrent single CAS writes from many tasks (group commit) vs one raw transaction each;
- batched CAS ``update_many(status=True)`` of 1,000 vs one raw ``executemany`` transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from bench.harness import Comparison, Measurement
from cronloop.store import SQLiteStore, StoredObject

__all__ = ["run"]

_SPEC: dict[str, Any] = {"image": "python:3.12", "command": ["run", "--all"], "timeout": 300}
_LABELS = {"cronjob": "nightly", "region": "eu-1"}


def _raw_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in (
        "PRAGMA busy_timeout = 30000",
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = NORMAL",
        "PRAGMA foreign_keys = ON",
    ):
        conn.execute(pragma)
    return conn


class _Raw:
    """The baseline: the store's rows written with hand-written SQL on plain ``sqlite3``.

    Its database has the store's schema, whose triggers (migration 0002) write the ADDED and
    MODIFIED events of every object insert and update, for the baseline as for the store.
    """

    _OBJ = (
        "INSERT INTO objects (uid, kind, name, resource_version, generation, owner_uid, "
        "unique_key, labels, spec, status, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, 1, NULL, ?, ?, ?, ?, ?, ?)"
    )
    _LBL = "INSERT INTO object_labels (uid, key, value, kind) VALUES (?, ?, ?, ?)"
    _BUMP = "UPDATE store_meta SET revision = revision + ? WHERE id = 1 RETURNING revision"
    _CAS = (
        "UPDATE objects SET status = ?, resource_version = ?, updated_at = ? "
        "WHERE uid = ? AND resource_version = ?"
    )

    def __init__(self, path: Path) -> None:
        self.conn = _raw_connection(path)

    def create(self, names: list[str]) -> list[tuple[str, int]]:
        now = time.time_ns() // 1000
        labels = orjson.dumps(_LABELS, option=orjson.OPT_SORT_KEYS).decode()
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        head = conn.execute(self._BUMP, (len(names),)).fetchone()[0]
        first = head - len(names) + 1
        objs: list[tuple[Any, ...]] = []
        lbls: list[tuple[str, ...]] = []
        for offset, name in enumerate(names):
            uid, rev = str(uuid.uuid4()), first + offset
            spec = orjson.dumps({**_SPEC, "n": offset}, option=orjson.OPT_SORT_KEYS).decode()
            key = f"nightly@{name}"
            objs.append((uid, "Job", name, rev, key, labels, spec, "{}", now, now))
            lbls.extend((uid, k, v, "Job") for k, v in _LABELS.items())
        conn.executemany(self._OBJ, objs)
        conn.executemany(self._LBL, lbls)
        conn.execute("COMMIT")
        return [(row[0], row[3]) for row in objs]

    def update_status(self, items: list[tuple[str, int]], phase: str) -> list[tuple[str, int]]:
        now = time.time_ns() // 1000
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        head = conn.execute(self._BUMP, (len(items),)).fetchone()[0]
        first = head - len(items) + 1
        status = orjson.dumps({"phase": phase}, option=orjson.OPT_SORT_KEYS).decode()
        params, result = [], []
        for offset, (uid, version) in enumerate(items):
            rev = first + offset
            params.append((status, rev, now, uid, version))
            result.append((uid, rev))
        updated = conn.executemany(self._CAS, params).rowcount
        if updated != len(items):
            conn.execute("ROLLBACK")
            raise RuntimeError("baseline CAS lost a row")
        conn.execute("COMMIT")
        return result


def _job(name: str, n: int) -> StoredObject:
    return StoredObject(
        "Job", name, spec={**_SPEC, "n": n}, labels=_LABELS, unique_key=f"nightly@{name}"
    )


async def _one_run(directory: Path, index: int, batch: int, singles: int) -> dict[str, float]:
    """One run of every measurement on fresh databases; returns the metrics by name."""
    store_path, raw_path = directory / f"store-{index}.db", directory / f"raw-{index}.db"
    result: dict[str, float] = {}
    async with await SQLiteStore.open(raw_path):
        pass  # the baseline gets the very same schema
    raw = _Raw(raw_path)
    async with await SQLiteStore.open(store_path) as store:
        names = [f"batch-{i}" for i in range(batch)]
        jobs = [_job(name, i) for i, name in enumerate(names)]
        start = time.perf_counter()
        created = await store.create_many(jobs)
        result["store_batch"] = batch / (time.perf_counter() - start)
        start = time.perf_counter()
        raw_items = raw.create(names)
        result["raw_batch"] = batch / (time.perf_counter() - start)

        single_jobs = [_job(f"single-{i}", i) for i in range(singles)]
        start = time.perf_counter()
        for obj in single_jobs:
            await store.create(obj)
        result["store_single"] = (time.perf_counter() - start) / singles * 1e6
        start = time.perf_counter()
        for i in range(singles):
            raw.create([f"single-{i}"])
        result["raw_single"] = (time.perf_counter() - start) / singles * 1e6

        # The new objects are built before the clock starts: the row measures the store.
        running = [replace(o, status={"phase": f"Running-{i}"}) for i, o in enumerate(created)]
        start = time.perf_counter()
        for obj in running[:singles]:
            await store.update_status(obj)
        result["store_cas"] = singles / (time.perf_counter() - start)
        start = time.perf_counter()
        for i, item in enumerate(raw_items[:singles]):
            raw_items[i] = raw.update_status([item], f"Running-{i}")[0]
        result["raw_cas"] = singles / (time.perf_counter() - start)

        # Concurrent writers: many tasks' single CAS writes, grouped into shared commits.
        stored = await asyncio.gather(*(store.get("Job", o.name) for o in running[:singles]))
        again = [replace(o, status={"phase": "Again"}) for o in stored]
        start = time.perf_counter()
        await asyncio.gather(*(store.update_status(obj) for obj in again))
        result["store_cas_concurrent"] = singles / (time.perf_counter() - start)
        start = time.perf_counter()
        for i, item in enumerate(raw_items[:singles]):
            raw_items[i] = raw.update_status([item], "Again")[0]
        result["raw_cas_concurrent"] = singles / (time.perf_counter() - start)

        fresh = (await store.list("Job", labels={"cronjob": "nightly"}, limit=batch)).items
        done = [replace(o, status={"phase": "Done"}) for o in fresh]
        start = time.perf_counter()
        await store.update_many(done, status=True)
        result["store_cas_batch"] = len(fresh) / (time.perf_counter() - start)
        start = time.perf_counter()
        raw.update_status(raw_items[: len(fresh)], "Done")
        result["raw_cas_batch"] = len(fresh) / (time.perf_counter() - start)
    raw.conn.close()
    return result


async def run(quick: bool) -> list[Comparison]:
    """Measure each row ``runs`` times (fresh databases each run) and compare medians."""
    runs, batch, singles = (3, 200, 50) if quick else (7, 1000, 300)
    with tempfile.TemporaryDirectory(prefix="cronloop-bench-store-") as tmp:
        samples = [await _one_run(Path(tmp), index, batch, singles) for index in range(runs)]

    def measure(key: str, subject: str) -> Measurement:
        return Measurement(subject, tuple(sample[key] for sample in samples))

    note = "same rows (object, labels, event, revision bump), same PRAGMAs; WAL, synchronous=NORMAL"
    return [
        Comparison(
            name=f"create_many x{batch}",
            metric="throughput",
            unit="objects/s",
            cronloop=measure("store_batch", "SQLiteStore.create_many"),
            baseline=measure("raw_batch", "sqlite3 executemany"),
            target=5000.0,
            target_absolute=True,
            notes=f"one transaction per batch; {note}",
        ),
        Comparison(
            name="create (single)",
            metric="latency",
            unit="µs/op",
            cronloop=measure("store_single", "SQLiteStore.create"),
            baseline=measure("raw_single", "sqlite3 insert+commit"),
            higher_is_better=False,
            notes="one object per transaction, awaited one after another",
        ),
        Comparison(
            name="update_status (CAS)",
            metric="throughput",
            unit="ops/s",
            cronloop=measure("store_cas", "SQLiteStore.update_status"),
            baseline=measure("raw_cas", "sqlite3 UPDATE .. WHERE version=?"),
            notes="one compare-and-set per transaction, with its event row",
        ),
        Comparison(
            name=f"update_status x{singles} concurrent tasks",
            metric="throughput",
            unit="ops/s",
            cronloop=measure("store_cas_concurrent", "SQLiteStore.update_status (gather)"),
            baseline=measure("raw_cas_concurrent", "sqlite3 one CAS transaction each"),
            notes=(
                "writes queued together share one commit "
                "(group commit; savepoints only if one of them fails)"
            ),
        ),
        Comparison(
            name=f"update_many(status) x{batch}",
            metric="throughput",
            unit="objects/s",
            cronloop=measure("store_cas_batch", "SQLiteStore.update_many"),
            baseline=measure("raw_cas_batch", "sqlite3 executemany UPDATE"),
            target=5000.0,
            target_absolute=True,
            notes="batched compare-and-set, all or nothing",
        ),
    ]

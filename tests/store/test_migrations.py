"""Migrations: shipped in the package, applied at open, idempotent, matching schema.py."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from cronloop.store import (
    MIGRATIONS_DIR,
    SQLiteStore,
    StoredObject,
    head_schema_revision,
    schema_revision,
    upgrade_schema,
)
from cronloop.store._schema import metadata


def _sqlite_names(path: Path, kind: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,))
        return {name for (name,) in rows if not name.startswith("sqlite_")}


async def test_fresh_database_is_migrated_to_head(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    async with await SQLiteStore.open(path) as store:
        assert await store.current_revision() == 0
    assert _sqlite_names(path, "table") == {
        "alembic_version",
        "store_meta",
        "objects",
        "object_labels",
        "events",
    }
    assert {
        "ix_objects_owner_uid",
        "ix_object_labels_selector",
        "ix_events_kind_revision",
    } <= _sqlite_names(path, "index")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head_schema_revision(),)
        ]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_migrated_database_reopens_untouched(tmp_path: Path) -> None:
    path = tmp_path / "again.db"
    async with await SQLiteStore.open(path) as store:
        await store.create(StoredObject("Job", "kept"))
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        assert upgrade_schema(conn) is False  # already at head: nothing runs
        assert schema_revision(conn) == head_schema_revision()
    engine.dispose()
    async with await SQLiteStore.open(path) as store:
        assert (await store.get("Job", "kept")).resource_version == 1


async def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    async with asyncio.timeout(30):
        stores = await asyncio.gather(*(SQLiteStore.open(path) for _ in range(4)))
    try:
        await stores[0].create(StoredObject("Job", "a"))
        assert (await stores[3].get("Job", "a")).resource_version == 1
    finally:
        for store in stores:
            await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


def test_migrations_match_the_schema_module(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'cmp.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    with engine.begin() as conn:  # and they go down and up again cleanly
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
        assert schema_revision(conn) is None
        command.upgrade(config, "head")
        assert schema_revision(conn) == head_schema_revision()
    engine.dispose()

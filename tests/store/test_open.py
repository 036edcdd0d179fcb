"""``open_store``: URLs and paths select and open the backend; bad URLs are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Connection

from cronloop.store import InvalidObject, SQLiteStore, StoredObject, open_store


async def test_plain_path_and_sqlite_url_open_the_same_database(tmp_path: Path) -> None:
    path = tmp_path / "by-path.db"
    async with await open_store(path) as store:
        assert isinstance(store, SQLiteStore)
        await store.create(StoredObject("Job", "a"))
    async with await open_store(f"sqlite:///{path}") as store:
        assert (await store.get("Job", "a")).resource_version == 1
    async with await open_store(str(path), synchronous="FULL", readers=1) as store:
        assert await store.current_revision() == 1


@pytest.mark.parametrize(
    ("url", "pattern"),
    [
        ("sqlite://", "needs a database file"),
        ("sqlite:///:memory:", "needs a database file"),
        ("postgresql://localhost/cronloop", "no store backend for 'postgresql'"),
        ("not a url://x", "is not a database URL"),
    ],
)
async def test_unusable_urls_are_refused(url: str, pattern: str) -> None:
    with pytest.raises(InvalidObject, match=pattern):
        await open_store(url)


async def test_kinds_must_not_be_a_string(tmp_path: Path) -> None:
    async with await open_store(tmp_path / "k.db") as store:
        with pytest.raises(InvalidObject, match="kinds: must be a list"):
            await anext(aiter(store.watch(kinds="Job")))


@pytest.mark.parametrize(("synchronous", "level"), [("NORMAL", 1), ("FULL", 2)])
async def test_sqlite_connections_carry_the_durability_pragmas(
    tmp_path: Path, synchronous: str, level: int
) -> None:
    async with await SQLiteStore.open(
        tmp_path / "p.db", synchronous=synchronous, busy_timeout=2.5
    ) as store:

        def pragmas(conn: Connection) -> list[object]:
            names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            return [conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names]

        assert await store._read(pragmas) == ["wal", level, 1, 2500]
        assert await store._write(pragmas) == ["wal", level, 1, 2500]

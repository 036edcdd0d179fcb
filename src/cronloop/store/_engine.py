"""SQLAlchemy engines on a SQLite file, set up the way every store connection needs.

Shared by the store (its readers and its writer thread) and the writer process, so that a
connection is configured the same wherever it is opened.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import URL, create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["sqlite_engine"]


def _enter_wal(cursor: Any, within: float) -> None:
    """Put the database in WAL mode (a no-op once it is), retrying while another connection
    holds the lock.

    Switching the journal mode needs an exclusive lock, and SQLite may report it busy without
    calling the busy handler (when several processes open a new database at once), so the
    busy timeout alone does not cover it.
    """
    deadline = time.monotonic() + within
    delay = 0.001
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)  # on a connecting thread, never on the event loop
        delay = min(delay * 2, 0.05)


def sqlite_engine(
    path: Path, *, synchronous: str, busy_ms: int, pool_size: int, begin: str
) -> Engine:
    """An engine on the database at ``path``: WAL, ``synchronous``, foreign keys on, the
    ``sqlite3`` module's own transaction handling off, and ``begin`` (``BEGIN`` or ``BEGIN
    IMMEDIATE``) opening every transaction."""
    url = URL.create("sqlite", database=str(path))
    engine = create_engine(url, pool_size=pool_size, max_overflow=0)
    pragmas = (f"PRAGMA synchronous = {synchronous}", "PRAGMA foreign_keys = ON")
    busy_s = busy_ms / 1000

    def on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the sqlite3 module (it would not BEGIN before a
        # SELECT), so every read sees one snapshot and every write locks first.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        _enter_wal(cursor, busy_s)
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    def on_begin(connection: Connection) -> None:
        # Straight to the driver: exec_driver_sql costs more than the BEGIN itself.
        connection.connection.driver_connection.execute(begin)  # type: ignore[union-attr]

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    return engine

"""Fixtures for the store suite: every test runs once per backend.

``open_store`` opens stores on one shared database per test (so a test can have several
stores, like several processes, on the same data) and closes them all at teardown. Adding a
backend is one more entry in ``BACKENDS``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cronloop.store import SQLiteStore, Store

OpenStore = Callable[..., Awaitable[Store]]

#: ``sqlite-executor`` is SQLite with ``group_commit=False`` (one transaction per write on an
#: executor thread), the mode the fake-clock controller tests use; ``sqlite-process`` runs
#: the writer in a process of its own, as ``cronloop up`` does.
BACKENDS = ["sqlite", "sqlite-executor", "sqlite-process"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    param: str = request.param
    return param


@pytest.fixture
async def open_store(backend: str, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Open another store on this test's database: ``await open_store(**options)``."""
    opened: list[Store] = []

    async def open_one(**options: Any) -> Store:
        options.setdefault("poll_interval", 0.02)
        if backend in ("sqlite", "sqlite-executor", "sqlite-process"):
            if backend == "sqlite-executor":
                options.setdefault("group_commit", False)
            if backend == "sqlite-process":
                options.setdefault("writer", "process")
            store: Store = await SQLiteStore.open(tmp_path / "store.db", **options)
        else:  # pragma: no cover - no other backend yet
            raise AssertionError(f"unknown backend {backend}")
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    """A store on a fresh database."""
    return await open_store()

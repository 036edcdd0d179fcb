"""Fixtures of the API server tests: a real SQLite store, the app, and a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from cronloop.server import create_app
from cronloop.store import Store, open_store
from tests.server.builders import T0

TOKEN = "s3cret-test-token"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await open_store(tmp_path / "s.db") as opened:
        yield opened


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("cronloop_test_events", "Events seen by the test.", registry=registry).inc(3)
    return registry


@pytest.fixture
def clock() -> list[datetime]:
    """The app's clock: tests move it by replacing ``clock[0]``."""
    return [T0]


@pytest.fixture
async def client(
    store: Store, log_dir: Path, registry: CollectorRegistry, clock: list[datetime]
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        store,
        token=TOKEN,
        log_dir=log_dir,
        registry=registry,
        manager_status=lambda: {"controllers": ["cronjob", "job"], "leader": True},
        clock=lambda: clock[0],
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://cronloop.test",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as http:
        yield http

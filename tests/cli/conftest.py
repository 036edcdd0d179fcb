"""Fixtures of the CLI tests: a live API server and a runner of the registered commands."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from cronloop.cli.commands import register
from cronloop.store import Store, open_store
from tests.server.live import LiveServer

Invoke = Callable[..., Result]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "server", poll_interval=0.05) as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A store of its own (no server) for the tests of ``cronloop up``'s parts."""
    async with await open_store(tmp_path / "cronloop.db") as opened:
        yield opened


@pytest.fixture
def cli_app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, add_completion=False)
    register(app)
    return app


@pytest.fixture
def invoke(cli_app: typer.Typer, live: LiveServer, tmp_path: Path) -> Invoke:
    """Run ``cronloop <args>`` against the live server (connection from the environment)."""
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        environment = {
            "CRONLOOP_SERVER": live.url,
            "CRONLOOP_TOKEN": live.token,
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }
        environment.update(env or {})
        return runner.invoke(
            cli_app, ["--help"] if not args else list(args), env=environment, catch_exceptions=False
        )

    return run


def in_background(fn: Callable[[], None]) -> threading.Thread:
    """Run ``fn`` in a daemon thread; join it (with a bound) after the command returns."""
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread

"""The event loop choice of ``cronloop up``: names, errors, and the loops they make."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from typer.testing import CliRunner

from cronloop.cli.eventloop import LOOPS, loop_factory
from cronloop.cli.main import app


def _made_by(name: str) -> type[asyncio.AbstractEventLoop]:
    loop = loop_factory(name)()  # type: ignore[arg-type]
    try:
        return type(loop)
    finally:
        loop.close()


def test_auto_is_uvloop_where_installed() -> None:
    assert _made_by("auto") is uvloop.Loop
    assert _made_by("uvloop") is uvloop.Loop


def test_asyncio_is_the_standard_loop() -> None:
    made = _made_by("asyncio")
    assert made is not uvloop.Loop
    assert issubclass(made, asyncio.BaseEventLoop)


def test_an_unknown_loop_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="loop must be one of auto, asyncio, uvloop, got 'fast'"):
        loop_factory("fast")  # type: ignore[arg-type]
    assert LOOPS == ("auto", "asyncio", "uvloop")


def test_up_refuses_an_unknown_loop_in_one_line() -> None:
    result = CliRunner().invoke(app, ["up", "--loop", "fast"], catch_exceptions=False)
    assert result.exit_code == 2
    assert "error: --loop: loop must be one of auto, asyncio, uvloop, got 'fast'" in result.output

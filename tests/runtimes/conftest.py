"""Fixtures for the runtime tests: runtimes that are always closed, even when a test fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from cronloop.cli.eventloop import loop_factory
from cronloop.runtimes.inline import InlineRuntime
from cronloop.runtimes.process import ProcessRuntime
from tests.runtimes.helpers import Recorder


@pytest.fixture
async def process_runtime() -> AsyncIterator[ProcessRuntime]:
    runtime = ProcessRuntime(shutdown_grace=1.0, drain_timeout=1.0)
    try:
        yield runtime
    finally:
        await runtime.aclose()


@pytest.fixture
async def inline_runtime() -> AsyncIterator[InlineRuntime]:
    runtime = InlineRuntime(max_workers=4, shutdown_grace=1.0)
    try:
        yield runtime
    finally:
        await runtime.aclose()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


#: The process runtime meets the loop most directly (child processes, pipes, signals), and
#: ``cronloop up`` runs it on uvloop: its tests run on both loops.
_BOTH_LOOPS = ("tests.runtimes.test_process",)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    del config
    module = getattr(item, "module", None)
    if module is not None and module.__name__ in _BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop, "uvloop": loop_factory("uvloop")}
    return {"asyncio": asyncio.new_event_loop}

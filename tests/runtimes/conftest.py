"""Fixtures for the runtime tests: runtimes that are always closed, even when a test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

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

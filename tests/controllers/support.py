"""Waits and checks shared by the controller tests that script their runtime.

Every wait here is bounded and woken by an event, never by polling: under ``looptime`` the
bound is fake time, so a wait that never comes true fails at once instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from cronloop.api import Phase

from .scripted import ScriptedRuntime


async def wait_until(changed: asyncio.Event, done: Callable[[], bool], *, within: float) -> None:
    """Wait until ``done()`` holds, re-checked each time ``changed`` is set, for at most
    ``within`` seconds."""
    async with asyncio.timeout(within):
        while not done():
            changed.clear()
            await changed.wait()


async def wait_started(runtime: ScriptedRuntime, count: int, *, within: float = 120.0) -> list[str]:
    """The ids of the ``count`` attempts ``runtime`` was asked to start (sorted), once it was.

    The default bound leaves room for a ``* * * * *`` CronJob's first run, a minute away.
    """
    await wait_until(runtime.changed, lambda: len(runtime.started) >= count, within=within)
    assert len(runtime.started) == count, sorted(runtime.started)
    return sorted(runtime.started)


async def start_running(
    runtime: ScriptedRuntime, count: int, *, within: float = 120.0
) -> list[str]:
    """:func:`wait_started`, then report each of the attempts Running (its first report)."""
    attempts = await wait_started(runtime, count, within=within)
    for attempt in attempts:
        runtime.report(attempt, 1, Phase.RUNNING)
    return attempts


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing was logged at warning level or above (a task's lost error included)."""
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage() for r in loud]


__all__ = ["assert_quiet", "start_running", "wait_started", "wait_until"]

"""Test-wide settings.

Hypothesis runs without per-example deadlines: CI machines are noisy and a timing is never a
test verdict here. Async tests run under pytest-asyncio (auto mode); tests that wait on time use
``@pytest.mark.looptime`` so the loop's clock is fake and jumps forward instead of sleeping.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Generator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    print_blob=True,
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Give every sync test its own event loop and close it afterwards.

    looptime's plugin asks the event loop policy for a loop around every test, sync ones
    included, and the policy creates one that nobody closes; its ResourceWarning then fails
    whichever test the garbage collector happens to run in. Setting a loop for sync tests here
    (this wrapper runs outside looptime's) means the policy hands out ours, and we close it.
    """
    # pytest-asyncio replaces an async test's function with a sync wrapper, so the marker it
    # adds (auto mode) is what tells the two kinds apart.
    if pyfuncitem.get_closest_marker("asyncio") is not None or inspect.iscoroutinefunction(
        pyfuncitem.obj
    ):
        return (yield)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return (yield)
    finally:
        asyncio.set_event_loop(None)
        loop.close()

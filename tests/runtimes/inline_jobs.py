"""Callables the inline-runtime tests run by name (``tests.runtimes.inline_jobs:<name>``).

Tests coordinate with them through :data:`GATES` (threading events keyed by name) instead of
sleeping: a job blocks on a gate the test opens when it has checked what it wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections import defaultdict

from cronloop.runtimes.inline import AttemptContext

GATES: defaultdict[str, threading.Event] = defaultdict(threading.Event)
SEEN: dict[str, object] = {}

NOT_CALLABLE = 42


async def add(a: int, b: int, *, ctx: AttemptContext) -> None:
    ctx.log("sum", a + b, "for", ctx.target, "attempt", ctx.attempt, "shard", ctx.shard_index)


def in_thread() -> None:
    SEEN["thread"] = threading.current_thread().name


def no_ctx(x: int) -> None:
    SEEN["x"] = x


async def sleep_forever(ctx: AttemptContext) -> None:
    try:
        await asyncio.sleep(3600)
    finally:
        ctx.log("unwound")


async def ignore_cancel() -> None:
    # Misbehaves on purpose: swallows its first cancellation and keeps going (a second one,
    # from the runtime's aclose(), ends it so the test's loop can finish).
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)
    await asyncio.sleep(3600)


def blocking(gate: str, *, ctx: AttemptContext) -> None:
    GATES[gate].wait(30)
    SEEN[gate] = ctx.cancelled
    GATES[f"{gate}:done"].set()


def cooperative(gate: str, *, ctx: AttemptContext) -> None:
    ctx.log("waiting to be cancelled")
    while not ctx.cancelled:
        GATES[gate].wait(0.01)
    ctx.log("noticed the cancel")
    ctx.raise_if_cancelled()


def boom(secret_kwarg: str) -> None:
    raise ValueError("boom")


async def aboom() -> None:
    raise KeyError("missing")


def exits(code: str | int | None) -> None:
    sys.exit(code)


async def aexits(code: str | int | None) -> None:
    sys.exit(code)


def returns_coroutine() -> object:
    return aboom()


class Callable:
    async def __call__(self) -> None:
        SEEN["async_call"] = True


async_object = Callable()

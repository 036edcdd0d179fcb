"""Example job functions for the inline runtime, referenced by the example specs.

Each is named in a spec as ``callable: cronloop.demos.jobs:<name>`` and shows one thing an
inline job can do: take keyword arguments, use its :class:`AttemptContext` (``ctx``), be sync
(run in a worker thread) or async (run on the loop), and stop when asked.
"""

from __future__ import annotations

import asyncio
import time

from cronloop.runtimes.inline import AttemptContext

__all__ = ["heartbeat", "prepare", "report", "slow"]


def heartbeat(message: str = "alive", *, ctx: AttemptContext) -> None:
    """A sync job: write one line saying which target and attempt is alive."""
    ctx.log(f"heartbeat: {message}: target={ctx.target} attempt={ctx.attempt} at {time.time():.3f}")


async def report(target: str | None = None, *, ctx: AttemptContext) -> None:
    """An async job: report on ``target`` (default: the sub-job's own target)."""
    name = target if target is not None else ctx.target
    shard = "" if ctx.shard_index is None else f" shard={ctx.shard_index}"
    ctx.log(f"report: collecting status of {name}{shard}")
    await asyncio.sleep(0)  # stands in for real I/O
    ctx.log(f"report: {name} is healthy")


def prepare(ctx: AttemptContext) -> None:
    """A ``prepare`` step: runs before ``main``; raising here fails the sub-job's attempt."""
    ctx.raise_if_cancelled()
    ctx.log(f"prepare: target {ctx.target} is ready for step 'main'")


async def slow(seconds: float = 30.0, *, ctx: AttemptContext) -> None:
    """An async job that takes ``seconds``: use it to watch timeouts and cancels happen."""
    ctx.log(f"slow: working for {seconds:g} s")
    await asyncio.sleep(seconds)
    ctx.log("slow: done")

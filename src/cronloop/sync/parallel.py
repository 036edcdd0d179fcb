"""Bounded fan-out: ``parallelize``, ``parallelize_until`` and ``ConcurrencyTokens`` (seed 002).

``parallelize(workers, pieces, fn)`` is client-go's ``workqueue.ParallelizeUntil`` for asyncio:
a fixed number of worker tasks pull piece indices (or chunks of them) from a shared counter, so
ten thousand checks cost ``workers`` tasks, not ten thousand. ``ConcurrencyTokens`` covers the
other half of seed 002: work whose tasks someone else creates, where all you can do is make each
one hold a token while it runs.

Why hand-written: ``asyncio.TaskGroup`` plus a semaphore bounds concurrency but still creates a
task per piece (about a microsecond each, and memory for every pending one), has no chunking and
no "stop taking new pieces" signal that leaves running pieces alone. The worker loop is a dozen
lines; the structured-concurrency part is ``asyncio.TaskGroup`` and the semaphore behind
``ConcurrencyTokens`` is ``anyio.CapacityLimiter``.

Errors: the first piece to raise cancels the pieces still running and the workers stop taking
new ones, exactly as ``asyncio.TaskGroup`` does; the errors come out as an ``ExceptionGroup``
(catch them with ``except*``). Unlike Go, cancellation through ``parallelize_until`` is not
silent: the returned :class:`ParallelResult` says how many pieces ran and whether it stopped
early.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, runtime_checkable

import anyio

__all__ = [
    "CancelSignal",
    "ConcurrencyTokens",
    "ParallelResult",
    "TokenStatistics",
    "parallelize",
    "parallelize_until",
]


@runtime_checkable
class _IsSet(Protocol):
    def is_set(self) -> bool: ...


@runtime_checkable
class _CancelCalled(Protocol):
    @property
    def cancel_called(self) -> bool: ...


CancelSignal = _IsSet | _CancelCalled
"""What ``parallelize_until`` checks before each piece: anything with ``is_set()``
(``asyncio.Event``, ``anyio.Event``, ``threading.Event``) or ``cancel_called`` (an anyio
``CancelScope``)."""


@dataclass(frozen=True)
class ParallelResult:
    """How a ``parallelize_until`` call ended: ``completed`` of ``pieces`` ran to completion;
    ``cancelled`` is True if the signal stopped it before every piece had started."""

    pieces: int
    completed: int
    cancelled: bool

    @property
    def skipped(self) -> int:
        """Pieces that never started because of the cancel signal."""
        return self.pieces - self.completed


async def parallelize(workers: int, pieces: int, fn: Callable[[int], Awaitable[object]]) -> None:
    """Run ``await fn(i)`` for every ``i`` in ``range(pieces)``, at most ``workers`` at a time.

    Every piece runs exactly once; pieces start in index order. If a piece raises, the running
    pieces are cancelled, no new ones start, and the errors are raised as an ``ExceptionGroup``.
    """
    await parallelize_until(None, workers, pieces, fn)


async def parallelize_until(
    cancel: CancelSignal | None,
    workers: int,
    pieces: int,
    fn: Callable[[int], Awaitable[object]],
    *,
    chunk_size: int = 1,
) -> ParallelResult:
    """Like :func:`parallelize`, checking ``cancel`` before each piece, in chunks.

    The pieces are cut into chunks of ``chunk_size`` consecutive indices; ``min(workers,
    chunks)`` worker tasks each take the next chunk and run its pieces one after another.
    Once ``cancel`` is set no new piece starts, running pieces finish undisturbed, and the
    result reports ``cancelled=True`` with the count of pieces that completed.
    """
    is_cancelled = _cancel_predicate(cancel)
    _check_count("workers", workers, minimum=1)
    _check_count("pieces", pieces, minimum=0)
    _check_count("chunk_size", chunk_size, minimum=1)
    if pieces == 0:
        return ParallelResult(0, 0, False)
    chunks = -(-pieces // chunk_size)
    next_chunk = 0
    completed = 0
    stopped = False

    async def worker() -> None:
        nonlocal next_chunk, completed, stopped
        # Single-threaded: taking a chunk index needs no lock, there is no await in between.
        while next_chunk < chunks:
            start = next_chunk * chunk_size
            next_chunk += 1
            for piece in range(start, min(start + chunk_size, pieces)):
                if is_cancelled():
                    stopped = True
                    return
                await fn(piece)
                completed += 1

    async with asyncio.TaskGroup() as group:
        for _ in range(min(workers, chunks)):
            group.create_task(worker())
    return ParallelResult(pieces, completed, stopped)


def _cancel_predicate(cancel: CancelSignal | None) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, _IsSet):
        return cancel.is_set
    if isinstance(cancel, _CancelCalled):
        return lambda: cancel.cancel_called
    raise TypeError(
        "cancel must have is_set() (an Event) or cancel_called (a CancelScope), "
        f"got {type(cancel).__name__}"
    )


def _check_count(name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class TokenStatistics:
    """``total`` tokens, ``borrowed`` now, ``waiting`` tasks, and the most ever borrowed at
    once (``max_borrowed``, a high-water mark for tuning ``total``)."""

    total: int
    borrowed: int
    waiting: int
    max_borrowed: int


class ConcurrencyTokens:
    """At most ``total`` holders at once, for work whose tasks you do not create yourself.

    ``async with tokens:`` holds one token for the block; ``acquire``/``release`` do the same
    by hand, ``acquire_nowait`` raises ``anyio.WouldBlock`` instead of waiting. A token is held
    by the task that acquired it: acquiring twice in one task or releasing from another task
    raises ``RuntimeError`` (anyio's ``CapacityLimiter`` rules). Waiters are served first come,
    first served. Loop-local: use from one event loop.
    """

    __slots__ = ("_limiter", "_max_borrowed")

    def __init__(self, total: int) -> None:
        _check_count("total", total, minimum=1)
        self._limiter = anyio.CapacityLimiter(total)
        self._max_borrowed = 0

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<ConcurrencyTokens {s.borrowed}/{s.total} borrowed, {s.waiting} waiting>"

    @property
    def total(self) -> int:
        """How many tokens exist; raising it wakes waiters, lowering it takes effect as
        holders release."""
        return int(self._limiter.total_tokens)

    @total.setter
    def total(self, value: int) -> None:
        _check_count("total", value, minimum=1)
        self._limiter.total_tokens = value

    async def acquire(self) -> None:
        """Wait for a token and hold it in the current task."""
        await self._limiter.acquire()
        self._note_borrowed()

    def acquire_nowait(self) -> None:
        """Take a token without waiting; raise ``anyio.WouldBlock`` if none is free."""
        self._limiter.acquire_nowait()
        self._note_borrowed()

    def release(self) -> None:
        """Give back the current task's token."""
        self._limiter.release()

    def statistics(self) -> TokenStatistics:
        """A snapshot of the tokens' use."""
        stats = self._limiter.statistics()
        return TokenStatistics(
            total=int(stats.total_tokens),
            borrowed=stats.borrowed_tokens,
            waiting=stats.tasks_waiting,
            max_borrowed=self._max_borrowed,
        )

    async def __aenter__(self) -> ConcurrencyTokens:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _note_borrowed(self) -> None:
        borrowed = self._limiter.borrowed_tokens
        if borrowed > self._max_borrowed:
            self._max_borrowed = borrowed

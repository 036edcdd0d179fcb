"""Tests of cronloop.sync.parallel: bounds, exactly-once, chunking, cancellation, errors, tokens."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cronloop.sync.parallel import (
    ConcurrencyTokens,
    ParallelResult,
    TokenStatistics,
    parallelize,
    parallelize_until,
)


class Probe:
    """Records which task ran which piece, and the most pieces ever in flight at once."""

    def __init__(self, seed: int = 0, yields: int = 3) -> None:
        self.rng = random.Random(seed)
        self.yields = yields
        self.ran: Counter[int] = Counter()
        self.order: list[tuple[asyncio.Task[object] | None, int]] = []  # (task, piece)
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, piece: int) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.order.append((asyncio.current_task(), piece))
        try:
            for _ in range(self.rng.randint(0, self.yields)):
                await asyncio.sleep(0)  # a checkpoint, so that pieces interleave
            self.ran[piece] += 1
        finally:
            self.in_flight -= 1


@given(
    workers=st.integers(1, 12),
    pieces=st.integers(0, 60),
    chunk_size=st.integers(1, 8),
    seed=st.integers(0, 1000),
)
async def test_every_piece_runs_once_and_the_bound_holds(
    workers: int, pieces: int, chunk_size: int, seed: int
) -> None:
    probe = Probe(seed)
    result = await parallelize_until(None, workers, pieces, probe, chunk_size=chunk_size)
    assert result == ParallelResult(pieces=pieces, completed=pieces, cancelled=False)
    assert probe.ran == Counter(range(pieces))
    assert probe.max_in_flight <= workers
    chunks = -(-pieces // chunk_size)
    # No task per piece: never more worker tasks than min(workers, chunks).
    assert len({task for task, _ in probe.order}) <= min(workers, chunks)


async def test_the_bound_is_reached_when_pieces_take_time() -> None:
    probe = Probe(yields=0)
    release = asyncio.Event()
    started = 0

    async def piece(i: int) -> None:
        nonlocal started
        started += 1
        if started == 4:
            release.set()
        async with asyncio.timeout(5):
            await release.wait()
        await probe(i)

    await parallelize(4, 20, piece)
    assert probe.ran == Counter(range(20))
    assert started == 20


async def test_chunks_are_contiguous_and_run_in_one_task() -> None:
    probe = Probe(seed=3)
    await parallelize_until(None, 2, 10, probe, chunk_size=3)
    by_piece = {piece: task for task, piece in probe.order}
    for chunk in ([0, 1, 2], [3, 4, 5], [6, 7, 8], [9]):
        assert len({by_piece[p] for p in chunk}) == 1
        positions = [next(i for i, (_, p) in enumerate(probe.order) if p == q) for q in chunk]
        assert positions == sorted(positions)


async def test_zero_pieces_and_more_workers_than_pieces() -> None:
    probe = Probe()
    assert await parallelize_until(None, 8, 0, probe) == ParallelResult(0, 0, False)
    assert not probe.ran
    await parallelize(100, 3, probe)
    assert probe.ran == Counter(range(3))
    assert len({task for task, _ in probe.order}) == 3


@pytest.mark.parametrize("signal_kind", ["asyncio", "anyio", "threading", "scope"])
async def test_cancel_stops_new_pieces_and_lets_running_ones_finish(signal_kind: str) -> None:
    asyncio_event = asyncio.Event()
    anyio_event = anyio.Event()
    thread_event = threading.Event()
    scope = anyio.CancelScope()  # never entered: only its cancel_called flag is read
    signals: dict[str, asyncio.Event | anyio.Event | threading.Event | anyio.CancelScope] = {
        "asyncio": asyncio_event,
        "anyio": anyio_event,
        "threading": thread_event,
        "scope": scope,
    }
    signal = signals[signal_kind]

    def cancel() -> None:
        asyncio_event.set()
        anyio_event.set()
        thread_event.set()
        scope.cancel()

    started: list[int] = []
    finished: list[int] = []
    cancel_sent = asyncio.Event()

    async def piece(i: int) -> None:
        started.append(i)
        if i == 5:
            cancel()
            cancel_sent.set()
        if i == 4:  # running when the cancel comes: must not be interrupted
            async with asyncio.timeout(5):
                await cancel_sent.wait()
        finished.append(i)

    result = await parallelize_until(signal, 3, 100, piece)
    assert result.cancelled
    assert sorted(started) == list(range(6))  # piece 5 raised the signal; none started after
    assert sorted(finished) == sorted(started)  # nothing that started was interrupted
    assert result.completed == len(finished)
    assert result.skipped == 100 - len(finished)


async def test_cancel_is_checked_before_each_piece_of_a_chunk() -> None:
    stop = asyncio.Event()
    ran: list[int] = []

    async def piece(i: int) -> None:
        ran.append(i)
        if i == 2:
            stop.set()

    result = await parallelize_until(stop, 1, 10, piece, chunk_size=5)
    assert ran == [0, 1, 2]
    assert result == ParallelResult(pieces=10, completed=3, cancelled=True)


async def test_a_cancel_set_before_the_call_runs_nothing() -> None:
    stop = asyncio.Event()
    stop.set()
    probe = Probe()
    result = await parallelize_until(stop, 4, 10, probe)
    assert result == ParallelResult(10, 0, True)
    assert not probe.ran


async def test_the_first_error_cancels_the_rest_and_propagates() -> None:
    cancelled: list[int] = []
    started: list[int] = []
    blocker = asyncio.Event()

    async def piece(i: int) -> None:
        started.append(i)
        if i == 3:
            raise ValueError("piece 3 failed")
        try:
            async with asyncio.timeout(5):
                await blocker.wait()
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    with pytest.raises(ExceptionGroup) as caught:
        await parallelize(4, 50, piece)
    assert caught.group_contains(ValueError, match="piece 3 failed")
    assert sorted(started) == [0, 1, 2, 3]
    assert sorted(cancelled) == [0, 1, 2]


async def test_bad_arguments_are_named() -> None:
    probe = Probe()
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        await parallelize(0, 3, probe)
    with pytest.raises(ValueError, match="pieces must be >= 0, got -1"):
        await parallelize(1, -1, probe)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        await parallelize_until(None, 1, 3, probe, chunk_size=0)
    with pytest.raises(TypeError, match="workers must be an int, got float"):
        await parallelize(1.5, 3, probe)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cancel must have is_set"):
        await parallelize_until(object(), 1, 3, probe)  # type: ignore[arg-type]
    assert not probe.ran


# -- ConcurrencyTokens ---------------------------------------------------------------------------


async def test_tokens_bound_tasks_created_elsewhere() -> None:
    tokens = ConcurrencyTokens(3)
    probe = Probe(seed=9)
    gate = asyncio.Event()
    waiting_seen: list[TokenStatistics] = []

    async def job(i: int) -> None:
        async with tokens:
            if i == 0:
                async with asyncio.timeout(5):
                    await gate.wait()
            await probe(i)

    async with asyncio.TaskGroup() as group:
        for i in range(20):
            group.create_task(job(i))
        for _ in range(5):
            await asyncio.sleep(0)  # let every task reach the tokens
        waiting_seen.append(tokens.statistics())
        gate.set()
    assert probe.ran == Counter(range(20))
    assert probe.max_in_flight <= 3
    assert waiting_seen[0].borrowed == 3
    assert waiting_seen[0].waiting > 0
    assert tokens.statistics() == TokenStatistics(total=3, borrowed=0, waiting=0, max_borrowed=3)


async def test_tokens_manual_acquire_release_and_nowait() -> None:
    tokens = ConcurrencyTokens(1)
    await tokens.acquire()
    assert "1/1 borrowed" in repr(tokens)
    with pytest.raises(RuntimeError):
        tokens.acquire_nowait()  # the same task already holds a token

    async def other() -> None:
        with pytest.raises(anyio.WouldBlock):
            tokens.acquire_nowait()
        with pytest.raises(RuntimeError):
            tokens.release()  # not this task's token

    await asyncio.create_task(other())
    tokens.release()
    tokens.acquire_nowait()
    tokens.release()
    assert tokens.statistics().borrowed == 0


async def test_raising_total_wakes_waiters() -> None:
    tokens = ConcurrencyTokens(1)
    await tokens.acquire()
    entered = asyncio.Event()

    async def waiter() -> None:
        async with tokens:
            entered.set()

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    assert tokens.statistics().waiting == 1
    tokens.total = 2
    async with asyncio.timeout(5):
        await entered.wait()
    await task
    tokens.release()
    assert tokens.total == 2
    with pytest.raises(ValueError, match="total must be >= 1, got 0"):
        tokens.total = 0
    with pytest.raises(ValueError, match="total must be >= 1, got 0"):
        ConcurrencyTokens(0)

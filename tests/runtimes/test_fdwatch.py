"""The process runtime's descriptor watchers: one epoll set on the loop, or the loop itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cronloop.runtimes import _fdwatch
from cronloop.runtimes._fdwatch import EpollWatcher, FdWatcher, LoopWatcher, fd_watcher

WATCHERS: list[Callable[[asyncio.AbstractEventLoop], FdWatcher]] = [EpollWatcher, LoopWatcher]


@pytest.fixture
def pipes() -> Iterator[list[tuple[int, int]]]:
    made: list[tuple[int, int]] = []
    yield made
    for read_fd, write_fd in made:
        for fd in (read_fd, write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _pipe(pipes: list[tuple[int, int]]) -> tuple[int, int]:
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    pipes.append((read_fd, write_fd))
    return read_fd, write_fd


@pytest.mark.parametrize("make", WATCHERS)
async def test_calls_back_while_readable_and_stops_after_remove(
    make: Callable[[asyncio.AbstractEventLoop], FdWatcher], pipes: list[tuple[int, int]]
) -> None:
    loop = asyncio.get_running_loop()
    watcher = make(loop)
    read_fd, write_fd = _pipe(pipes)
    got: list[bytes] = []
    two = loop.create_future()

    def on_readable() -> None:
        got.append(os.read(read_fd, 1))  # one byte per call: level-triggered calls again
        if len(got) == 2:
            watcher.remove(read_fd)
            two.set_result(None)

    watcher.add(read_fd, on_readable)
    os.write(write_fd, b"ab")
    async with asyncio.timeout(15):
        await two
    os.write(write_fd, b"c")  # no longer watched: nobody reads it
    for _ in range(5):
        await asyncio.sleep(0)
    assert got == [b"a", b"b"]
    assert watcher.loop is loop
    watcher.remove(read_fd)  # removing twice is ignored
    watcher.close()
    watcher.close()  # idempotent


async def test_a_descriptor_removed_by_an_earlier_callback_is_not_called(
    pipes: list[tuple[int, int]],
) -> None:
    # Both pipes are ready in the same dispatch; whichever runs first removes the other, whose
    # event from that same poll must then be dropped (its number could be reused by then).
    loop = asyncio.get_running_loop()
    watcher = EpollWatcher(loop)
    (first, first_w), (second, second_w) = _pipe(pipes), _pipe(pipes)
    calls: list[int] = []
    done = loop.create_future()

    def make(mine: int, other: int) -> Callable[[], None]:
        def callback() -> None:
            calls.append(mine)
            os.read(mine, 10)
            watcher.remove(mine)
            watcher.remove(other)
            done.set_result(None)

        return callback

    watcher.add(first, make(first, second))
    watcher.add(second, make(second, first))
    os.write(first_w, b"x")
    os.write(second_w, b"y")
    async with asyncio.timeout(15):
        await done
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(calls) == 1
    watcher.close()


async def test_a_failing_callback_goes_to_the_loop_handler_and_others_still_run(
    pipes: list[tuple[int, int]],
) -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    watcher = EpollWatcher(loop)
    (bad, bad_w), (good, good_w) = _pipe(pipes), _pipe(pipes)
    good_called = loop.create_future()

    def broken() -> None:
        watcher.remove(bad)
        raise RuntimeError("boom")

    def fine() -> None:
        watcher.remove(good)
        good_called.set_result(None)

    watcher.add(bad, broken)
    watcher.add(good, fine)
    os.write(bad_w, b"x")
    os.write(good_w, b"x")
    try:
        async with asyncio.timeout(15):
            await good_called
        for _ in range(5):
            await asyncio.sleep(0)
    finally:
        watcher.close()
        loop.set_exception_handler(None)
    assert [type(e["exception"]) for e in errors] == [RuntimeError]
    assert f"descriptor {bad}" in errors[0]["message"]


async def test_close_stops_everything(pipes: list[tuple[int, int]]) -> None:
    loop = asyncio.get_running_loop()
    watcher = EpollWatcher(loop)
    read_fd, write_fd = _pipe(pipes)
    watcher.add(read_fd, lambda: pytest.fail("called after close"))
    watcher.close()
    assert watcher.closed
    os.write(write_fd, b"x")
    for _ in range(5):
        await asyncio.sleep(0)


async def test_without_epoll_the_loop_watches_each_descriptor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    default = fd_watcher(loop)
    default.close()
    assert isinstance(default, EpollWatcher) == hasattr(select, "epoll")
    monkeypatch.setattr(_fdwatch, "_HAS_EPOLL", False)
    fallback = fd_watcher(loop)
    fallback.close()
    assert isinstance(fallback, LoopWatcher)

"""The writer process's grouping (``_writer_process.gather``): every write ready now, and,
after a small group, those that arrive within the linger; never past the deadline, the
group bound or the stop frame. Deterministic: the clock and the wait are the test's."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from cronloop.store._writer import MAX_GROUP
from cronloop.store._writer_process import _frame, _Frames, gather


@pytest.fixture
def pipe() -> Iterator[tuple[_Frames, Callable[[object], None], Callable[[], None]]]:
    read_fd, write_fd = os.pipe()
    closed = False

    def send(obj: object) -> None:
        os.write(write_fd, _frame(obj))

    def close() -> None:
        nonlocal closed
        os.close(write_fd)
        closed = True

    try:
        yield _Frames(read_fd), send, close
    finally:
        os.close(read_fd)
        if not closed:
            os.close(write_fd)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_without_linger_it_takes_what_is_ready_and_never_waits(
    pipe: tuple[_Frames, Callable[[object], None], Callable[[], None]],
) -> None:
    frames, send, _ = pipe
    for ident in (2, 3):
        send((ident, "write"))

    def wait(fd: int, timeout: float) -> None:
        raise AssertionError("waited without a linger")

    group, stop = gather(frames, (1, "write"), linger=0.0, wait=wait)
    assert [ident for ident, _ in group] == [1, 2, 3]
    assert not stop


def test_a_write_that_comes_within_the_linger_joins_the_group(
    pipe: tuple[_Frames, Callable[[object], None], Callable[[], None]],
) -> None:
    frames, send, _ = pipe
    clock = _Clock()
    waits: list[float] = []
    arrivals = [(2, "write"), (3, "write")]

    def wait(fd: int, timeout: float) -> None:
        waits.append(timeout)
        clock.now += 0.0004  # the next write comes 0.4 ms later
        if arrivals:
            send(arrivals.pop(0))

    group, stop = gather(frames, (1, "write"), linger=0.001, clock=clock, wait=wait)
    assert [ident for ident, _ in group] == [1, 2, 3]
    assert not stop
    # Each wait is bounded by what is left of the linger, and none goes past it.
    assert waits[0] == pytest.approx(0.001)
    assert all(0 < timeout <= 0.001 + 1e-9 for timeout in waits)
    assert clock.now - 100.0 <= 0.001 + 0.0004
    assert len(waits) == 3  # two arrivals, then the deadline passed in the third


def test_the_stop_frame_ends_the_group_and_says_so(
    pipe: tuple[_Frames, Callable[[object], None], Callable[[], None]],
) -> None:
    frames, send, _ = pipe
    send((2, "write"))
    send(None)
    send((3, "write"))  # after the stop: never taken
    group, stop = gather(frames, (1, "write"), linger=0.001, clock=_Clock())
    assert [ident for ident, _ in group] == [1, 2]
    assert stop


def test_a_group_never_exceeds_its_bound(
    pipe: tuple[_Frames, Callable[[object], None], Callable[[], None]],
) -> None:
    frames, send, _ = pipe
    for ident in range(2, MAX_GROUP + 10):
        send((ident, "write"))
    group, stop = gather(frames, (1, "write"), linger=0.001, clock=_Clock())
    assert len(group) == MAX_GROUP
    assert not stop
    rest, _ = gather(frames, frames.read(), linger=0.0)
    assert len(group) + len(rest) == MAX_GROUP + 9  # every write, once


def test_the_end_of_the_pipe_ends_the_linger(
    pipe: tuple[_Frames, Callable[[object], None], Callable[[], None]],
) -> None:
    frames, _, close = pipe
    close()
    waits: list[float] = []
    group, stop = gather(
        frames, (1, "write"), linger=10.0, clock=_Clock(), wait=lambda fd, t: waits.append(t)
    )
    assert [ident for ident, _ in group] == [1]
    assert not stop
    assert waits == []

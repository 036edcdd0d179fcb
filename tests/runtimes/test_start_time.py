"""Start times of spawned children: read from the boot clock around the spawn, or from /proc,
and always equal to what psutil (and therefore crash recovery) sees."""

from __future__ import annotations

import os
import shutil
import sys

import psutil
import pytest

from cronloop.runtimes import proctree
from cronloop.runtimes.proctree import (
    boot_ticks,
    process_start_time,
    same_start_time,
    spawned_start_time,
)

TRUE = shutil.which("true") or "/bin/true"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux boot clock")


def _spawn_bracketed() -> tuple[int, int | None, int | None]:
    before = boot_ticks()
    pid = os.posix_spawn(TRUE, [TRUE], {"PATH": os.defpath})
    after = boot_ticks()
    return pid, before, after


def _reap(pid: int) -> None:
    os.waitpid(pid, 0)


@linux_only
def test_the_bracket_gives_exactly_the_start_time_proc_shows() -> None:
    checked = 0
    for _ in range(200):
        pid, before, after = _spawn_bracketed()
        try:
            ticks = proctree._stat_start_ticks(pid)  # the child is unreaped: /proc still has it
            assert ticks is not None
            assert before is not None
            assert after is not None
            assert before <= ticks <= after
            if before == after:
                checked += 1
                assert ticks == before
            start = spawned_start_time(pid, before, after)
            assert start is not None
            assert start == process_start_time(pid)
            assert same_start_time(start, psutil.Process(pid).create_time())
        finally:
            _reap(pid)
    assert checked > 100  # a spawn takes far less than a 10 ms tick


@linux_only
def test_proc_is_read_until_the_bracket_was_checked_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(proctree, "_brackets_agree", None)
    reads: list[int] = []
    real = proctree._stat_start_ticks

    def counting(pid: int) -> int | None:
        reads.append(pid)
        return real(pid)

    monkeypatch.setattr(proctree, "_stat_start_ticks", counting)
    pids = []
    try:
        for _ in range(50):
            pid, before, after = _spawn_bracketed()
            pids.append(pid)
            spawned_start_time(pid, before, after)
            if proctree._brackets_agree:
                break
        assert proctree._brackets_agree is True
        pid, _, _ = _spawn_bracketed()
        pids.append(pid)
        ticks = real(pid)
        assert ticks is not None
        expected = process_start_time(pid)
        reads.clear()
        # The same tick before and after: no /proc read at all.
        assert spawned_start_time(pid, ticks, ticks) == expected
        assert reads == []
        # Readings in different ticks are ambiguous: /proc decides.
        assert spawned_start_time(pid, ticks - 1, ticks) == expected
        assert reads == [pid]
    finally:
        for pid in pids:
            _reap(pid)


@linux_only
def test_a_kernel_that_disagrees_with_the_bracket_is_never_trusted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(proctree, "_brackets_agree", None)
    pid = os.posix_spawn(TRUE, [TRUE], {"PATH": os.defpath})
    try:
        ticks = proctree._stat_start_ticks(pid)
        assert ticks is not None
        caplog.set_level("INFO", logger="cronloop.runtimes")
        wrong = ticks + 7  # as if the kernel stamped processes some other way
        assert spawned_start_time(pid, wrong, wrong) == process_start_time(pid)
        assert proctree._brackets_agree is False
        assert "reading /proc instead" in caplog.text
        assert spawned_start_time(pid, wrong, wrong) == process_start_time(pid)
    finally:
        _reap(pid)


def test_without_a_boot_clock_the_start_time_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proctree, "_HAS_BOOT_CLOCK", False)
    assert boot_ticks() is None
    pid = os.posix_spawn(TRUE, [TRUE], {"PATH": os.defpath})
    try:
        start = spawned_start_time(pid, None, None)
        assert start is not None
        assert same_start_time(start, psutil.Process(pid).create_time())
    finally:
        _reap(pid)


def test_a_child_that_is_gone_has_no_start_time() -> None:
    pid, before, after = _spawn_bracketed()
    _reap(pid)
    if before != after or not proctree._brackets_agree:
        assert spawned_start_time(pid, before, after) is None
    assert process_start_time(pid) is None

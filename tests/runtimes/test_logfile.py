"""The size-limited attempt log: keeps the head, counts the rest, can be followed."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronloop.runtimes import logfile
from cronloop.runtimes.logfile import AttemptLog, append_note, truncation_marker


@settings(max_examples=60)
@given(
    chunks=st.lists(st.binary(max_size=300), max_size=12),
    limit=st.integers(min_value=0, max_value=1500),
)
def test_keeps_exactly_the_head_and_counts_the_rest(chunks: list[bytes], limit: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sub" / "a.log"
        log = AttemptLog.create(path, limit)  # also creates the missing parent directory
        for chunk in chunks:
            log.write(chunk)
        log.close()
        content = path.read_bytes()
    everything = b"".join(chunks)
    head = everything[:limit]
    dropped = len(everything) - len(head)
    assert (log.written, log.dropped) == (len(head), dropped)
    if dropped:
        separator = b"" if head.endswith(b"\n") or not head else b"\n"
        assert content == head + separator + truncation_marker(limit, dropped)
    else:
        assert content == everything


async def test_writes_after_close_are_ignored(tmp_path: Path) -> None:
    log = AttemptLog.create(tmp_path / "a.log", 100)
    log.write(b"kept\n")
    log.close()
    log.close()
    log.write(b"late\n")
    assert (tmp_path / "a.log").read_bytes() == b"kept\n"
    assert log.closed


async def test_note_starts_on_its_own_line(tmp_path: Path) -> None:
    log = AttemptLog.create(tmp_path / "a.log", 100)
    log.write(b"partial")
    log.note("stopping")
    log.close()
    assert (tmp_path / "a.log").read_bytes() == b"partial\n[cronloop] stopping\n"


async def test_follow_sees_writes_from_another_thread_and_ends_on_close(tmp_path: Path) -> None:
    log = AttemptLog.create(tmp_path / "a.log", 1000)
    ready = threading.Event()

    def writer() -> None:
        for i in range(5):
            log.write(f"line {i}\n".encode())
            ready.wait(5)  # one line per chunk the reader acknowledges
            ready.clear()
        log.close()

    thread = threading.Thread(target=writer)
    thread.start()
    received = b""
    try:
        async with asyncio.timeout(15):
            async for chunk in log.read(follow=True):
                received += chunk
                ready.set()
    finally:
        ready.set()
        thread.join(15)
    assert not thread.is_alive()
    assert received == b"".join(f"line {i}\n".encode() for i in range(5))


async def test_read_without_follow_returns_what_is_there(tmp_path: Path) -> None:
    log = AttemptLog.create(tmp_path / "a.log", 1000)
    log.write(b"so far")
    chunks = [c async for c in log.read(follow=False)]
    assert b"".join(chunks) == b"so far"
    log.close()


def test_append_note_creates_the_file(tmp_path: Path) -> None:
    append_note(tmp_path / "d" / "a.log", "recovered")
    append_note(tmp_path / "d" / "a.log", "again")
    assert (tmp_path / "d" / "a.log").read_bytes() == b"[cronloop] recovered\n[cronloop] again\n"


def test_prepare_creates_the_file_only_at_the_first_byte(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    silent = AttemptLog.prepare(path, 100)
    silent.close()
    assert not path.exists()  # nothing was written, so no file
    log = AttemptLog.prepare(path, 100)
    assert not path.exists()
    log.write(b"first\n")
    assert path.read_bytes() == b"first\n"
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_prepare_truncates_an_existing_file_at_once(tmp_path: Path) -> None:
    # An earlier attempt's file at the same path must never show as this attempt's log,
    # even when this attempt prints nothing.
    path = tmp_path / "a.log"
    path.write_bytes(b"an older attempt's output\n")
    AttemptLog.prepare(path, 100).close()
    assert path.read_bytes() == b""


def test_prepare_makes_a_missing_directory_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "a.log"
    log = AttemptLog.prepare(path, 100)
    assert path.read_bytes() == b""
    log.write(b"x")
    log.close()
    assert path.read_bytes() == b"x"


def test_prepare_raises_when_the_parent_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        AttemptLog.prepare(tmp_path / "file" / "a.log", 100)


def test_prepare_raises_when_the_directory_is_not_writable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    chattr = shutil.which("chattr")
    if os.geteuid() != 0:
        locked.chmod(0o500)
    elif chattr is None or subprocess.run([chattr, "+i", str(locked)], check=False).returncode:
        pytest.skip("root, and no immutable directories here")
    try:
        with pytest.raises(PermissionError):
            AttemptLog.prepare(locked / "a.log", 100)
    finally:
        if os.geteuid() == 0:
            subprocess.run([str(chattr), "-i", str(locked)], check=True)
        else:
            locked.chmod(0o700)
    assert not (locked / "a.log").exists()


def test_a_file_that_cannot_be_created_later_drops_and_counts_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = AttemptLog.prepare(tmp_path / "a.log", 100)  # the check passes...

    def no_space(path: Path) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(logfile, "_open", no_space)  # ...but the disk fills up meanwhile
    log.write(b"lost\n")
    log.note("also lost")
    log.close()
    assert log.error is not None
    assert log.error.errno == errno.ENOSPC
    assert log.dropped == len(b"lost\n") + len(b"[cronloop] also lost\n")
    assert not (tmp_path / "a.log").exists()
    assert "cannot create log file" in caplog.text


async def test_a_silent_lazy_log_reads_as_empty(tmp_path: Path) -> None:
    log = AttemptLog.prepare(tmp_path / "a.log", 100)
    assert [c async for c in log.read(follow=False)] == []
    log.close()
    async with asyncio.timeout(15):
        assert [c async for c in log.read(follow=True)] == []

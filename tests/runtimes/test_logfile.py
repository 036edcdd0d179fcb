"""The size-limited attempt log: keeps the head, counts the rest, can be followed."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

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

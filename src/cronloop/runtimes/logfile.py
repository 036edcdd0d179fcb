"""Per-attempt log files: a size-limited writer and a reader that can follow the file.

:class:`AttemptLog` keeps the first ``limit`` bytes of an attempt's output, counts (and drops)
the rest, and ends the file with a truncation marker when anything was dropped. It never
blocks or slows the writer because of the limit: the child keeps running and its pipe keeps
draining, so a chatty job cannot wedge itself on a full pipe.

Hand-written because the logging handlers in the standard library rotate or grow without
bound, and neither keeps-the-head nor lets an asyncio reader follow the file until the attempt
ends. Writes go straight to the file descriptor from the calling thread: they are page-cache
writes of at most ``limit`` bytes per attempt, far cheaper than a thread hop per chunk.

A lazy log (``AttemptLog.create(..., lazy=True)``, what the runtimes use) creates its file at
the first byte: most scheduled jobs print nothing, and creating a file (and its directory)
per attempt was the largest cost of starting a silent one. Readers treat a missing file as an
empty log. If the file cannot be created then, the output is counted as dropped (reported as
``logDroppedBytes``) and the error is kept in :attr:`AttemptLog.error`.
:meth:`AttemptLog.prepare` (what the process runtime uses) is a lazy log that first checks
that its file can be created, so that an unwritable log still stops an attempt before it runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = ["LOG_NOTE_PREFIX", "AttemptLog", "append_note", "truncation_marker"]

LOG_NOTE_PREFIX = b"[cronloop] "
"""Lines the runtime itself writes into an attempt log start with this prefix."""

_READ_CHUNK = 64 * 1024
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_EFFECTIVE_IDS = os.access in os.supports_effective_ids

logger = logging.getLogger(__name__)


def _open(path: Path) -> int:
    try:
        return os.open(path, _FLAGS, 0o600)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, _FLAGS, 0o600)


def truncation_marker(limit: int, dropped: int) -> bytes:
    """The line that ends a log whose output went over ``limit`` bytes."""
    return (
        LOG_NOTE_PREFIX
        + f"log truncated: kept the first {limit} bytes, dropped {dropped} more\n".encode()
    )


def append_note(path: Path, text: str) -> None:
    """Append one runtime note line to a log file, creating it if needed (blocking)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, LOG_NOTE_PREFIX + text.encode() + b"\n")
    finally:
        os.close(fd)


class AttemptLog:
    """The log file of one attempt: keeps the head, counts what goes over the limit.

    :meth:`write` and :meth:`close` may be called from any thread; :meth:`read` runs on an
    event loop (one loop per log), and writers wake its readers thread-safely.
    """

    def __init__(self, path: Path, limit: int, fd: int | None) -> None:
        self.path = path
        self.limit = limit
        #: None until the first byte of a lazy log.
        self._fd = fd
        #: Why a lazy log's file could not be created (its output was dropped).
        self.error: OSError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._lock = threading.Lock()
        self._written = 0
        self._dropped = 0
        self._ends_with_newline = True
        self._closed = False
        self._generation = 0
        self._waiters: list[asyncio.Future[None]] = []

    @classmethod
    def create(cls, path: Path, limit: int, *, lazy: bool = False) -> AttemptLog:
        """Create (or truncate) the file at ``path``, with its parent directories; with
        ``lazy``, only when the first byte is written.

        :raises OSError: if the file cannot be created (not raised when ``lazy``).
        """
        return cls(path, limit, None if lazy else _open(path))

    @classmethod
    def prepare(cls, path: Path, limit: int) -> AttemptLog:
        """A lazy log, once it is known that its file can be created at the first byte.

        The check costs two ``access`` system calls, one on the directory and one on the
        file. Creating an empty file on a journaling file system costs the caller tens to
        hundreds of microseconds of CPU, and much more when the disk is busy. The file is
        created now, as :meth:`create` does, if its directory is missing (it is made, with
        its parents) or not writable, or if the file exists already. It is truncated now,
        so that an earlier file's content is never shown as this log's.

        What the check cannot see (a full inode table, a quota, a security module, or a
        directory made read-only after the check) fails later, at the first byte. Then the
        output is dropped and counted, and the error is kept in :attr:`error`.

        :raises OSError: if the file cannot be created (its directory is not writable...).
        """
        name = os.fspath(path)
        # The trailing slash makes access() fail unless the parent is a directory.
        directory = name.rpartition("/")[0] + "/" if "/" in name else "./"
        if os.access(directory, os.W_OK | os.X_OK, effective_ids=_EFFECTIVE_IDS) and not (
            os.access(name, os.F_OK)
        ):
            return cls(path, limit, None)
        return cls(path, limit, _open(path))

    @property
    def written(self) -> int:
        """Bytes of output kept in the file (the truncation marker not included)."""
        return self._written

    @property
    def dropped(self) -> int:
        """Bytes of output dropped because the limit was reached."""
        return self._dropped

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run; the file will not change again."""
        return self._closed

    def write(self, data: bytes) -> None:
        """Keep what fits under the limit and count the rest; a no-op once closed."""
        if not data:
            return
        with self._lock:
            if self._closed:
                return
            room = self.limit - self._written
            kept = data if len(data) <= room else data[: max(room, 0)]
            self._dropped += len(data) - len(kept)
            if kept and not self._ensure_open():
                self._dropped += len(kept)
                kept = b""
            if kept:
                self._write_all(kept)
                self._written += len(kept)
                self._ends_with_newline = kept.endswith(b"\n")
                self._generation += 1
        if kept:
            self._notify()

    def note(self, text: str) -> None:
        """Write one runtime note line (``[cronloop] text``), subject to the limit."""
        prefix = b"" if self._ends_with_newline else b"\n"
        self.write(prefix + LOG_NOTE_PREFIX + text.encode() + b"\n")

    def close(self) -> None:
        """Write the truncation marker if anything was dropped, close the file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._dropped and self.error is None and self._ensure_open():
                    prefix = b"" if self._ends_with_newline else b"\n"
                    self._write_all(prefix + truncation_marker(self.limit, self._dropped))
            finally:
                if self._fd is not None:
                    os.close(self._fd)
                self._closed = True
                self._generation += 1
        self._notify()

    def _ensure_open(self) -> bool:
        """Open a lazy log's file (under the lock); False if it cannot be created."""
        if self._fd is not None:
            return True
        if self.error is not None:
            return False
        try:
            self._fd = _open(self.path)
        except OSError as exc:
            self.error = exc
            logger.warning("cannot create log file %s: %s", self.path, exc.strerror)
            return False
        return True

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def _notify(self) -> None:
        if not self._waiters or self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake()
        else:
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_changed(self, generation: int) -> None:
        if self._generation != generation:
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    async def read(self, *, follow: bool) -> AsyncIterator[bytes]:
        """Yield the file's contents from the start; with ``follow``, until it is closed."""
        while self._fd is None:  # a lazy log with no output yet
            generation, closed = self._generation, self._closed
            if closed or not follow:
                return
            await self._wait_changed(generation)
        with self.path.open("rb", buffering=0) as file:
            while True:
                # Sampled before reading: if the log was closed (or had not changed) before
                # this read, an empty read means there is nothing more to come yet.
                generation, closed = self._generation, self._closed
                data = file.read(_READ_CHUNK)
                if data:
                    yield data
                    continue
                if closed or not follow:
                    return
                await self._wait_changed(generation)

"""The store's writer in a process of its own, away from the event loop's GIL.

Why: the ``sqlite3`` module releases the GIL around every ``sqlite3_step`` and must take it
back afterwards. On a writer *thread* each statement therefore waited for the busy event loop
to hand the GIL back, up to a switch interval (5 ms) a statement: a commit of five statements
took about 25 ms, which set the latency of every fired run (a run due among 2,000 a second
started 150-250 ms late, most of it queued behind such commits). A writer process has its own
interpreter and GIL; its statements run at SQLite's speed, and the event loop only pickles
requests and results and reads the answers from a pipe it watches itself, so no thread of
this process waits for the GIL.

The writes are the same as on the thread: the plain-data writes of ``store._ops`` (and the
schema migration), run by :func:`cronloop.store._writer.run_group` with the same group commit.

Protocol, over the child's stdin and stdout: frames of an 8-byte big-endian length and a
pickle. The parent sends ``("open", options)`` first, then ``(id, write)`` per write and
``None`` to stop; the child answers ``("ready", error or None)`` once, then, per group it
committed, a list of ``(id, value, error)``. The child ends when told to or when its stdin
closes (the parent died, ``kill -9`` included), after the group it is running.

**Linger.** A group is every write that is ready when the previous one committed. When that
was a small group (fewer than :data:`LINGER_BELOW` writes: writes arrive one or two at a
time, as at 2,000 runs/s spread over seconds), the next group waits up to :data:`LINGER`
after its first write for more before it begins. Most of a small transaction's cost is the
transaction's own (``BEGIN``, the revision reservation, ``COMMIT`` and the WAL's fsync), so
this shares it among several writes: in the trigger benchmark's spread the writer was about
80% busy at some 400 us of CPU per run, and the runs' lateness tail was mostly the wait
for a commit; with the linger its CPU per run fell by about an eighth (paired ratio 0.87
over 16 pairs of runs) and the spread's p99 was under 50 ms in 9 of 16 runs against 4 of 16
without (paired p99 ratio 0.9: the machine's noise is larger than the effect). Big groups (a
burst) never linger: their next write is usually waiting already.

Hand-written because no library runs a SQLite writer out of process with group commit;
``multiprocessing`` would add a feeder and a result thread to this process, each again
waiting for the GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pickle
import select
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from cronloop.store import _ops
from cronloop.store._engine import sqlite_engine
from cronloop.store._writer import MAX_GROUP, run_group
from cronloop.store.errors import StoreError

__all__ = ["LINGER", "LINGER_BELOW", "WriterDied", "WriterProcess", "gather"]

T = TypeVar("T")
_HEADER = 8
#: How long a group after a small one waits for more writes (seconds; see the module
#: docstring), and what counts as small.
LINGER = 0.001
LINGER_BELOW = 16
#: How much of the writer's answers may wait unread: where the connection is a pipe (the
#: standard loop; uvloop uses socket pairs) the pipe is enlarged to it. A group's results are
#: often hundreds of KiB, and in a 10,000-run burst the writer was seen blocked in its write
#: for a quarter of its time, waiting for the busy event loop to read.
_PIPE_BYTES = 1 << 20


def _enlarge_pipe(fd: int) -> None:
    setsz = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsz is None:
        return
    # Not a pipe (a socket pair), or capped lower for unprivileged processes
    # (/proc/sys/fs/pipe-max-size): it keeps its size.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, setsz, _PIPE_BYTES)


class WriterDied(StoreError):
    """The writer process ended before answering; the write's outcome is unknown to it."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the store's writer process ended: {detail}")


def _frame(obj: object) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(_HEADER, "big") + data


#: A batch on the wire: plain tuples. Pickling a class instance costs a class reference and
#: a Python-level reduce per object (about 6 us for a batch of one status update, 0.6 us as
#: tuples), and a batch crosses the pipe at every commit.
_BATCH = "batch"


def _to_wire(write: object) -> object:
    if type(write) is not _ops.BatchWrite:
        return write
    rows = write.rows
    return (
        _BATCH,
        rows.creates,
        rows.create_labels,
        [tuple(r) for r in rows.updates],
        rows.update_labels,
        [tuple(r) for r in rows.status_updates],
        rows.deletes,
        write.now,
    )


def _from_wire(sent: Any) -> Any:
    if type(sent) is not tuple or not sent or sent[0] != _BATCH:
        return sent
    _, creates, create_labels, updates, update_labels, status_updates, deletes, now = sent
    request = _ops.UpdateRequest
    rows = _ops.BatchRows(
        creates=creates,
        create_labels=create_labels,
        updates=[request(*r) for r in updates],
        update_labels=update_labels,
        status_updates=[request(*r) for r in status_updates],
        deletes=deletes,
    )
    return _ops.BatchWrite(rows, now)


class _Child:
    """The writer process as the parent sees it: its pid, a kill, its exit."""

    def __init__(self, transport: asyncio.SubprocessTransport, exited: asyncio.Future[None]):
        self._transport = transport
        self._exited = exited

    @property
    def pid(self) -> int:
        return self._transport.get_pid()

    @property
    def returncode(self) -> int | None:
        return self._transport.get_returncode()

    def kill(self) -> None:
        self._transport.kill()

    async def wait(self) -> int | None:
        await asyncio.shield(self._exited)
        return self.returncode


class _Answers(asyncio.SubprocessProtocol):
    """Reads the writer's answers as they arrive and settles their futures right there.

    A protocol rather than ``create_subprocess_exec``'s stream reader: with the reader, an
    answer woke a reading task, which then woke the writes' callers, one turn of the loop
    each; here the callers are woken from the callback that reads the pipe. On a busy loop a
    turn is milliseconds (2,000 runs/s: 2-3 ms at the median from the writer's answer to
    the reading task), and a fired run waits for one commit before it starts.
    """

    def __init__(self, owner: WriterProcess, loop: asyncio.AbstractEventLoop) -> None:
        self._owner = owner
        self._buffer = bytearray()
        self.ready: asyncio.Future[Any] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.exited: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        if fd != 1:
            return
        try:
            self._receive(data)
        except Exception as exc:  # out of step with the writer: nothing it says can be trusted
            self._owner._broken(exc)

    def _receive(self, data: bytes | bytearray) -> None:
        buffer = self._buffer
        buffer += data
        frames = []
        offset = 0
        with memoryview(buffer) as view:
            while len(buffer) - offset >= _HEADER:
                size = int.from_bytes(view[offset : offset + _HEADER], "big")
                end = offset + _HEADER + size
                if len(buffer) < end:
                    break
                frames.append(pickle.loads(view[offset + _HEADER : end]))
                offset = end
        del buffer[:offset]
        for frame in frames:
            if not self.ready.done():
                self.ready.set_result(frame)
            else:
                self._owner._answered(frame)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._settle(self.eof)
            if not self.ready.done():
                self.ready.set_exception(WriterDied("before it was ready"))
            self._owner._ended_now()

    def process_exited(self) -> None:
        self._settle(self.exited)

    @staticmethod
    def _settle(future: asyncio.Future[None]) -> None:
        if not future.done():
            future.set_result(None)


class WriterProcess:
    """The parent's end: submit writes, get their results (the interface of the thread)."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str,
        busy_ms: int,
        on_commit: Callable[[], None],
    ) -> None:
        self._options = {"path": str(path), "synchronous": synchronous, "busy_ms": busy_ms}
        self._on_commit = on_commit
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._answers: _Answers | None = None
        self._process: _Child | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._ended: BaseException | None = None
        #: Frames submitted in this turn of the loop, written together at its end: one
        #: system call instead of one per write, and the writer sees them as one group.
        self._outgoing: list[bytes] = []

    async def wait_ready(self) -> None:
        """Start the process and open its connection; raise what opening it raised."""
        loop = asyncio.get_running_loop()
        answers = _Answers(self, loop)
        transport, _ = await loop.subprocess_exec(
            lambda: answers,
            sys.executable,
            "-m",
            "cronloop.store._writer_main",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
        )
        self._transport, self._answers = transport, answers
        self._process = _Child(transport, answers.exited)
        # A WriteTransport (uvloop's is not registered as one, hence no isinstance check).
        stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
        self._stdin = stdin
        stdin.write(_frame(("open", self._options)))
        kind, error = await answers.ready
        if kind != "ready":  # pragma: no cover - a bug in the protocol
            raise WriterDied(f"expected 'ready', got {kind!r}")
        if error is not None:
            await self._process.wait()
            transport.close()
            raise error

    async def submit(self, write: Callable[..., T]) -> T:
        """Run ``write(connection)`` in a write transaction of the writer process."""
        if self._ended is not None:
            raise WriterDied(str(self._ended))
        assert self._stdin is not None
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._next_id += 1
        self._pending[self._next_id] = future
        if not self._outgoing:
            future.get_loop().call_soon(self._flush)
        self._outgoing.append(_frame((self._next_id, _to_wire(write))))
        return await future

    def _flush(self) -> None:
        frames, self._outgoing = self._outgoing, []
        stdin = self._stdin
        if stdin is None or stdin.is_closing():
            return  # it ended: the end of its answers fails what is pending
        stdin.write(b"".join(frames))

    def _answered(self, results: list[tuple[int, Any, BaseException | None]]) -> None:
        for ident, value, error in results:
            future = self._pending.pop(ident)
            if future.done():  # the caller was cancelled; the write still happened
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)
        # After the results (see WriterThread._committed): one wake-up per commit.
        if any(error is None for _, _, error in results):
            self._on_commit()

    def _ended_now(self) -> None:
        """Its answers ended (it stopped, or it died): fail what it never answered."""
        if self._ended is None:
            returncode = self._transport.get_returncode() if self._transport else None
            self._ended = WriterDied(f"exit status {returncode}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WriterDied("before it answered this write"))
        self._pending.clear()

    def _broken(self, error: Exception) -> None:
        """An answer could not be read: fail what is pending and end the process (its later
        answers could not be matched to their writes)."""
        self._ended = WriterDied(f"its answer could not be read: {error!r}")
        self._ended_now()
        if self._transport is not None:
            self._transport.kill()

    async def stop(self) -> None:
        """Finish every queued write and end the process."""
        transport, answers, stdin = self._transport, self._answers, self._stdin
        if transport is None or answers is None or stdin is None:
            return
        if not stdin.is_closing():
            self._flush()  # queued writes go first
            stdin.write(_frame(None))
            stdin.close()  # after what it holds is written
        await answers.eof
        await answers.exited
        transport.close()


# ---- the child --------------------------------------------------------------------------------


class _Frames:
    """Frames read from a pipe, with a look at whether another is ready without blocking."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()
        self.eof = False

    def _fill(self, block: bool) -> bool:
        if not block and not select.select([self.fd], [], [], 0)[0]:
            return False
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            self.eof = True
            return False
        self._buffer += chunk
        return True

    def _complete(self) -> bool:
        if len(self._buffer) < _HEADER:
            return False
        return len(self._buffer) >= _HEADER + int.from_bytes(self._buffer[:_HEADER], "big")

    def ready(self) -> bool:
        """Whether a whole frame can be read now."""
        while not self._complete():
            if self.eof or not self._fill(block=False):
                return False
        return True

    def read(self) -> Any:
        """The next frame (blocking); raises EOFError at the end of the pipe."""
        while not self._complete():
            if self.eof or not self._fill(block=True):
                raise EOFError
        size = int.from_bytes(self._buffer[:_HEADER], "big")
        data = bytes(self._buffer[_HEADER : _HEADER + size])
        del self._buffer[: _HEADER + size]
        return pickle.loads(data)


def gather(
    frames: _Frames,
    first: Any,
    *,
    linger: float,
    clock: Callable[[], float] = time.monotonic,
    wait: Callable[[int, float], object] = lambda fd, timeout: select.select([fd], [], [], timeout),
) -> tuple[list[Any], bool]:
    """The group of writes that begins with ``first``: those ready now, and those that come
    within ``linger`` seconds, up to :data:`MAX_GROUP`; and whether the stop frame came.

    ``wait(fd, timeout)`` returns when ``fd`` may be read or after ``timeout`` seconds.
    """
    group = [first]
    deadline = clock() + linger
    while len(group) < MAX_GROUP:
        if not frames.ready():
            remaining = deadline - clock()
            if remaining <= 0 or frames.eof:
                break
            wait(frames.fd, remaining)
            continue
        nxt = frames.read()
        if nxt is None:
            return group, True
        group.append(nxt)
    return group, False


def _send(out: Any, obj: object) -> None:
    try:
        data = _frame(obj)
    except Exception:  # an unpicklable value or error: say what it was
        if not isinstance(obj, list):
            raise
        data = _frame([(i, None, RuntimeError(f"{v!r} / {e!r}")) for i, v, e in obj])
    out.write(data)
    out.flush()


def main() -> None:
    """The writer process: open the connection, then run groups of writes until told to stop
    or until stdin closes."""
    # A terminal's Ctrl-C and a service manager's SIGTERM reach the whole process group; the
    # parent handles them and then closes the pipe, and this process must outlive that long
    # enough to finish the writes the parent still sends. It ends on EOF (SIGKILL still works).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _enlarge_pipe(sys.stdin.fileno())
    _enlarge_pipe(sys.stdout.fileno())
    frames = _Frames(sys.stdin.fileno())
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the protocol
    try:
        kind, options = frames.read()
    except EOFError:
        return
    assert kind == "open"
    try:
        engine = sqlite_engine(
            Path(options["path"]),
            synchronous=options["synchronous"],
            busy_ms=options["busy_ms"],
            pool_size=1,
            begin="BEGIN IMMEDIATE",
        )
        conn = engine.connect()
    except Exception as error:
        _send(out, ("ready", error))
        return
    _send(out, ("ready", None))
    with conn:
        stop = False
        small = False
        while not stop:
            try:
                first = frames.read()
            except EOFError:
                break
            if first is None:
                break
            group, stop = gather(frames, first, linger=LINGER if small else 0.0)
            small = len(group) < LINGER_BELOW
            results = run_group(conn, [_from_wire(write) for _, write in group])
            _send(out, [(ident, v, e) for (ident, _), (v, e) in zip(group, results, strict=True)])
    engine.dispose()

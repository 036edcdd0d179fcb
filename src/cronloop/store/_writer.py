"""The writer thread: runs write transactions one after another, with group commit.

Why hand-written: the store needs one thread that owns the write connection (SQLite allows
one writer; holding it in one thread makes revisions commit in order), and it needs *group
commit*: writes queued while a transaction runs are executed together in the next
transaction, so they share one ``BEGIN``/``COMMIT`` (and one fsync with ``synchronous=FULL``)
and one wake-up of the event loop. A group first runs optimistically, without a savepoint
per write (each statement costs the writer a hand-back of the GIL from the busy event loop,
see ``_bulk``); if any write fails, the group is rolled back and run again with a savepoint
per write, so a failed write fails alone and the others commit. No executor offers this.

In the optimistic run, consecutive *combinable* writes (``store._ops.BatchWrite``: batches
of creates and updates) touching disjoint objects run as one batch: a group of 8 batches then
costs the statements of one, not 8 times theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine

from cronloop.store._ops import BatchWrite

__all__ = ["MAX_GROUP", "Result", "WriterThread", "run_group"]

T = TypeVar("T")

MAX_GROUP = 128


@dataclass(slots=True)
class _Request:
    fn: Callable[[Connection], Any]
    future: asyncio.Future[Any]


_Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]


Result = tuple[Any, BaseException | None]
"""A write's outcome: its value, or the error it failed with."""


def run_group(conn: Connection, writes: list[Callable[[Connection], Any]]) -> list[Result]:
    """Run ``writes`` in one transaction on ``conn`` (see the module docstring): optimistically
    first, consecutive combinable writes together; if that fails, each in its own savepoint.
    Returns each write's outcome; if the transaction itself failed, every write failed."""
    if len(writes) > 1:
        try:
            with conn.begin():
                values = _run_combined(conn, writes)
        except Exception:
            pass  # some write failed: run them again, each in its own savepoint
        else:
            return [(value, None) for value in values]
    try:
        with conn.begin():
            if len(writes) == 1:
                return [(writes[0](conn), None)]
            return _run_savepoints(conn, writes)
    except Exception as error:
        # The transaction as a whole did not commit: every write of the group failed.
        return [(None, error) for _ in writes]


def _run_combined(conn: Connection, writes: list[Callable[[Connection], Any]]) -> list[Any]:
    """Run every write, consecutive combinable ones together."""
    values: list[Any] = []
    index = 0
    while index < len(writes):
        fn = writes[index]
        touched = fn.touches() if isinstance(fn, BatchWrite) else None
        if touched is None:
            values.append(fn(conn))
            index += 1
            continue
        assert isinstance(fn, BatchWrite)
        others: list[BatchWrite] = []
        seen = set(touched)
        index += 1
        while index < len(writes):
            other = writes[index]
            more = other.touches() if isinstance(other, BatchWrite) else None
            if more is None or not seen.isdisjoint(more):
                break
            assert isinstance(other, BatchWrite)
            seen |= more
            others.append(other)
            index += 1
        values.extend(fn.together(conn, others) if others else [fn(conn)])
    return values


def _run_savepoints(conn: Connection, writes: list[Callable[[Connection], Any]]) -> list[Result]:
    driver = conn.connection.driver_connection
    assert driver is not None
    results: list[Result] = []
    for fn in writes:
        driver.execute("SAVEPOINT cronloop_write")
        try:
            value = fn(conn)
        except Exception as error:
            # If SQLite already rolled the whole transaction back (I/O error, disk full),
            # this raises and the caller fails the entire group.
            driver.execute("ROLLBACK TO cronloop_write")
            driver.execute("RELEASE cronloop_write")
            results.append((None, error))
        else:
            driver.execute("RELEASE cronloop_write")
            results.append((value, None))
    return results


def _settle(outcomes: list[_Outcome]) -> None:
    for future, value, error in outcomes:
        if future.done():  # the caller was cancelled; the write itself still happened
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class WriterThread:
    """One thread, one connection, transactions in submission order (grouped when queued).

    ``on_commit`` runs on the event loop after every commit, before the writers' awaits
    return, even for writes whose caller was cancelled meanwhile.
    """

    def __init__(
        self, engine: Engine, loop: asyncio.AbstractEventLoop, on_commit: Callable[[], None]
    ) -> None:
        self._engine = engine
        self._loop = loop
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._ready: asyncio.Future[None] = loop.create_future()
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(target=self._run, name="cronloop-store-writer", daemon=True)
        self._thread.start()

    async def wait_ready(self) -> None:
        """Return once the thread has its connection; raise if connecting failed."""
        await asyncio.shield(self._ready)

    async def submit(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` in a write transaction and return its result.

        ``fn`` raising rolls back everything it did and the exception is raised here.
        """
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Request(fn, future))
        return await future

    async def stop(self) -> None:
        """Finish every queued write, close the connection and end the thread."""
        self._queue.put(None)
        await self._stopped

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(callback, *args)

    def _run(self) -> None:
        try:
            conn = self._engine.connect()
        except Exception as error:
            self._post(_settle, [(self._ready, None, error), (self._stopped, None, None)])
            return
        self._post(_settle, [(self._ready, None, None)])
        with conn:
            while True:
                first = self._queue.get()
                if first is None:
                    break
                group = [first]
                while len(group) < MAX_GROUP:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._queue.put(None)  # stop after this group
                        break
                    group.append(nxt)
                self._run_group(conn, group)
        self._post(_settle, [(self._stopped, None, None)])

    def _run_group(self, conn: Connection, group: list[_Request]) -> None:
        results = run_group(conn, [request.fn for request in group])
        outcomes = [
            (r.future, value, error) for r, (value, error) in zip(group, results, strict=True)
        ]
        if any(error is None for _, error in results):
            self._post(self._committed, outcomes)
        else:
            self._post(_settle, outcomes)

    def _committed(self, outcomes: list[_Outcome]) -> None:
        # Settled first: the writers resume (and remember their changes) before the watchers
        # the commit wakes, which then find the changes in memory instead of waking twice.
        _settle(outcomes)
        self._on_commit()

"""The KeyedLooper: one logical sync loop per key, many keys in parallel on a bounded pool.

Handlers posted under one key (a job id) run strictly in posting order and never concurrently,
as if each key had its own :class:`~cronloop.sync.looper.Looper`; handlers of different keys
run in parallel, at most ``workers`` at a time (parallelism matters for async handlers: sync
handlers all share the event loop's thread anyway).

Per-key state is created by the first post and dropped as soon as the key has nothing queued
or running, so an idle key costs nothing. Keys with work wait in one ready FIFO; a worker takes
the head key, runs at most ``batch_size`` of its handlers and puts it back at the tail. A newly
posted key therefore waits for at most one batch of every key ahead of it plus the batches in
progress: however many handlers a hot key has queued, it delays the new key by at most about
``2 x batch_size`` handler executions.

Why hand-written: the usual asyncio design (one ``asyncio.Queue`` and one consumer task per key,
as Kopf does) costs a task and a queue per live key, needs idle timeouts to reclaim them, and
offers no bound on parallelism or fairness. No maintained package offers this contract.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from types import CoroutineType
from typing import Any, Generic, TypeVar, TypeVarTuple, overload

from cronloop.sync._dispatch import (
    _BATCH,
    _DONE,
    _RUNNING,
    Handle,
    LooperClosed,
    _Dispatcher,
    _spent,
    _wake_future,
    loop_clock,
)

__all__ = ["KeyedLooper", "KeyedLooperStatistics"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True)
class KeyedLooperStatistics:
    """A snapshot of a :class:`KeyedLooper`."""

    #: Keys with handlers queued or running (the only keys that hold memory).
    live_keys: int
    #: Keys waiting in the ready FIFO for a worker.
    ready_keys: int
    #: Handlers accepted and not yet started, over all keys.
    pending: int
    #: Handlers executing now (at most ``workers``).
    running: int
    #: Worker tasks alive (busy or parked).
    workers: int
    #: Handlers that ran to completion, successfully or not.
    dispatched: int
    #: Handlers that raised an exception.
    failed: int
    #: Handlers removed before they ran (``cancel()``, ``remove()`` or dropped by ``quit``).
    cancelled: int
    #: Handlers that ran longer than ``slow_dispatch_threshold``.
    slow_dispatches: int
    #: True once ``quit()``/``quit_safely()`` was called.
    closed: bool


class _KeyState:
    """One live key: its queue and how many of its posts have been retired (run or skipped)."""

    __slots__ = ("posted", "queue", "retired", "scheduled")

    def __init__(self) -> None:
        self.queue: deque[Handle[Any]] = deque()
        self.posted = 0
        self.retired = 0
        # True while the key sits in the ready FIFO or a worker holds it: never both, never
        # twice, which is what makes a key's handlers strictly serial.
        self.scheduled = False


class _IdleWaiter:
    """A ``wait_idle`` call: per key, how many posts must retire before it may return."""

    __slots__ = ("future", "remaining")

    def __init__(self, future: asyncio.Future[None], remaining: dict[Any, int]) -> None:
        self.future = future
        self.remaining = remaining


class KeyedLooper(_Dispatcher, Generic[K]):
    """Serial per key, parallel across keys (up to ``workers``), fair between keys.

    Use it as ``async with KeyedLooper(workers=8) as looper:`` (a normal exit runs everything
    queued: ``quit_safely``; an exit by exception drops it: ``quit``), or ``start()`` /
    ``quit*()`` / ``wait_closed()``. :meth:`post` and :meth:`Handle.cancel` may be called from
    any thread. A handler that raises is logged, counted and passed to ``on_error``; its key
    carries on with the next handler.
    """

    def __init__(
        self,
        *,
        workers: int = 16,
        batch_size: int = 8,
        name: str = "keyed-looper",
        slow_dispatch_threshold: float | None = 0.1,
        on_error: Callable[[Handle[Any], Exception], object] | None = None,
    ) -> None:
        super().__init__(name, slow_dispatch_threshold, None, on_error)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self._max_workers = workers
        self._batch_size = batch_size
        self._keys: dict[K, _KeyState] = {}
        self._ready: deque[K] = deque()
        self._parked: deque[asyncio.Future[None]] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        # Handlers claimed by a worker; running = claimed - dispatched.
        self._claimed = 0
        self._idle_waiters: list[_IdleWaiter] = []
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Bind to the running event loop (call it on that loop); workers start on demand."""
        self._bind_loop()
        self._started = True

    def _apply_quit(self) -> None:
        self._close_inbox()
        if not self._quit_safely:
            waiting = set(self._ready)
            self._ready.clear()
            for key, state in list(self._keys.items()):
                while state.queue:
                    self._drop(state.queue.popleft())
                    state.retired += 1
                if key in waiting:
                    # Not held by a worker: nothing will touch this key again.
                    state.scheduled = False
                    del self._keys[key]
                    self._forget_for_waiters(key)
        while self._parked:
            _wake_future(self._parked.popleft())

    async def wait_closed(self) -> None:
        """Wait until every worker stopped (after ``quit``/``quit_safely``).

        Cancelling the waiter does not stop the looper. Re-raises an internal worker error.
        """
        if not self._started:
            raise self._not_started()
        if not self._closed:
            raise RuntimeError(f"looper {self._name!r} is running: call quit() or quit_safely()")
        while self._workers:
            await asyncio.shield(asyncio.gather(*self._workers))

    async def wait_idle(self) -> None:
        """Wait until every handler posted so far (from any thread) has run or was cancelled.

        Handlers posted after the call are not waited for, so it returns under load too.
        """
        if not self._started:
            raise self._not_started()
        if not self._in_loop_thread():
            raise RuntimeError(f"wait_idle() of looper {self._name!r} runs on its event loop")
        self._drain_inbox()
        remaining = {key: state.posted for key, state in self._keys.items()}
        if not remaining:
            return
        assert self._loop is not None
        waiter = _IdleWaiter(self._loop.create_future(), remaining)
        self._idle_waiters.append(waiter)
        try:
            await asyncio.shield(waiter.future)
        finally:
            if waiter in self._idle_waiters:
                self._idle_waiters.remove(waiter)

    # -- posting ---------------------------------------------------------------------------

    @overload
    def post(
        self, key: K, fn: Callable[[*Ts], Coroutine[Any, Any, T]], /, *args: *Ts
    ) -> Handle[T]: ...

    @overload
    def post(self, key: K, fn: Callable[[*Ts], T], /, *args: *Ts) -> Handle[T]: ...

    def post(self, key: K, fn: Callable[[*Ts], Any], /, *args: *Ts) -> Handle[Any]:
        """Run ``fn(*args)`` after every handler posted earlier under ``key``; thread-safe.

        Raises :class:`~cronloop.sync.looper.LooperClosed` after ``quit``. A post from another
        thread that races with ``quit`` may be accepted and then dropped (handle cancelled).
        """
        handle: Handle[Any] = Handle(self, fn, args)
        if threading.get_ident() == self._post_thread:
            # _enqueue, inlined: this is the hot path.
            self._accepted += 1
            state = self._keys.get(key)
            if state is None:
                state = self._keys[key] = _KeyState()
            state.queue.append(handle)
            state.posted += 1
            if not state.scheduled:
                state.scheduled = True
                self._ready.append(key)
                self._kick()
        else:
            if self._closed:
                raise LooperClosed(self._name)
            self._post_from_thread((key, handle))
        return handle

    def _accept_from_thread(self, item: tuple[Any, ...]) -> None:
        key, handle = item
        if self._inbox_closed():
            self._drop(handle)
        else:
            self._enqueue(key, handle)

    def _enqueue(self, key: K, handle: Handle[Any]) -> None:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState()
        state.queue.append(handle)
        state.posted += 1
        if not state.scheduled:
            state.scheduled = True
            self._ready.append(key)
            self._kick()

    def _kick(self) -> None:
        """A key became ready: wake a parked worker, or start one if under the limit."""
        if self._parked:
            _wake_future(self._parked.popleft())
        elif len(self._workers) < self._max_workers:
            assert self._loop is not None
            task = self._loop.create_task(self._work(), name=f"{self._name}:worker")
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    # -- workers ---------------------------------------------------------------------------

    async def _work(self) -> None:
        try:
            await self._work_until_closed()
        except asyncio.CancelledError:
            # Cancelled from outside (event loop shutdown): nothing will run the rest.
            if self._close_flag(safely=False) or not self._quit_safely:
                self._apply_quit()
            raise

    async def _work_until_closed(self) -> None:
        loop = asyncio.get_running_loop()
        keys, ready = self._keys, self._ready
        acquire, release = self._lock.acquire, self._lock.release
        clock = loop_clock(loop)
        slow_dispatch = self._slow_dispatch
        batch_size = self._batch_size
        since_yield = 0
        while True:
            if not ready:
                if self._closed:
                    return
                parked: asyncio.Future[None] = loop.create_future()
                self._parked.append(parked)
                try:
                    await parked
                finally:
                    if not parked.done():
                        self._parked.remove(parked)
                since_yield = 0
                continue
            key = ready.popleft()
            state = keys[key]
            queue = state.queue
            budget = batch_size
            retired = 0
            now = clock()
            try:
                while budget and queue:
                    handle = queue.popleft()
                    retired += 1
                    acquire()
                    if handle._state:  # not _PENDING: cancelled while queued
                        release()
                        continue
                    handle._state = _RUNNING
                    release()
                    budget -= 1
                    fn = handle._fn
                    self._claimed += 1
                    try:
                        result = fn(*handle._args)
                        if result is not None and type(result) is CoroutineType:
                            since_yield = 0
                            result = await result
                    except asyncio.CancelledError:
                        self._handler_cancelled(handle)
                        task = asyncio.current_task()
                        if task is not None and task.cancelling():
                            raise
                    except Exception as exc:
                        self._handler_failed(handle, fn, exc)
                    else:
                        handle._outcome = result
                        handle._state = _DONE
                        handle._fn = _spent
                        handle._args = ()
                        if handle._waiters is not None:
                            handle._wake_waiters()
                    finally:
                        self._dispatched += 1
                    end = clock()
                    if end - now > slow_dispatch:
                        self._slow_dispatch_seen(fn, end - now)
                    now = end
            finally:
                state.retired += retired
                self._release(key, state)
            since_yield += batch_size - budget
            if since_yield >= _BATCH:
                # Sync handlers never suspend: give the event loop a turn now and then.
                since_yield = 0
                await asyncio.sleep(0)

    def _release(self, key: K, state: _KeyState) -> None:
        """A worker is done with ``key`` for now: requeue it at the tail, or drop it if empty."""
        if state.queue:
            self._ready.append(key)
            if self._parked and len(self._ready) > 1:
                # This worker takes one ready key next; a parked one can take another.
                _wake_future(self._parked.popleft())
        else:
            state.scheduled = False
            del self._keys[key]
        if self._idle_waiters:
            self._check_idle(key, state)

    def _check_idle(self, key: K, state: _KeyState) -> None:
        dropped = key not in self._keys
        for waiter in list(self._idle_waiters):
            target = waiter.remaining.get(key)
            if target is not None and (dropped or state.retired >= target):
                del waiter.remaining[key]
                if not waiter.remaining:
                    _wake_future(waiter.future)
                    self._idle_waiters.remove(waiter)

    def _forget_for_waiters(self, key: K) -> None:
        for waiter in list(self._idle_waiters):
            if waiter.remaining.pop(key, None) is not None and not waiter.remaining:
                _wake_future(waiter.future)
                self._idle_waiters.remove(waiter)

    # -- introspection ---------------------------------------------------------------------

    def statistics(self) -> KeyedLooperStatistics:
        """A snapshot of the counters (see :class:`KeyedLooperStatistics`)."""
        return KeyedLooperStatistics(
            live_keys=len(self._keys),
            ready_keys=len(self._ready),
            pending=self._pending_count(self._claimed - self._dispatched),
            running=self._claimed - self._dispatched,
            workers=len(self._workers),
            dispatched=self._dispatched,
            failed=self._failed,
            cancelled=self._cancelled,
            slow_dispatches=self._slow_dispatches,
            closed=self._closed,
        )

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<KeyedLooper {self._name!r} live_keys={stats.live_keys} "
            f"pending={stats.pending} closed={stats.closed}>"
        )

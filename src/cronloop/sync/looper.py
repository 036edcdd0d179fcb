"""The Looper: one consumer task that runs posted handlers one at a time, in deadline order.

This is the sync loop of seed 000 (a Go ``SyncLooper``) and of Android's ``Looper``/``Handler``
on top of the running asyncio loop. Handlers share a loop-local :attr:`Looper.context` without
locks because they never overlap, not even across an ``await`` inside an async handler.

It re-exports :class:`Handle` (the receipt of a post: cancellable, awaitable on the loop,
waitable from threads) and :class:`LooperClosed`, which live with the lifecycle and dispatch
bookkeeping it shares with :mod:`cronloop.sync.keyed` in :mod:`cronloop.sync._dispatch`.

Why hand-written: asyncio's ``call_soon``/``call_at`` do not serialise coroutine handlers, do not
keep FIFO order among equal deadlines (its timer heap has no tiebreak), offer no thread-safe
cancel and no quit/quit-safely lifecycle. No maintained PyPI package provides this contract.

Design for speed: a post goes straight into a deque (no clock read unless slow delivery is
tracked or delayed handlers are waiting), delayed ones into a heap keyed by ``(deadline,
sequence)`` and are moved to the deque's tail the moment they fall due, which keeps the deque
in deadline order. There is no Task and no Future per handler (futures exist only while someone
awaits a handle), sync handlers are called directly by the consumer, and the consumer yields to
the event loop after every batch of 256 so that it never starves other tasks.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import CoroutineType
from typing import Any, Generic, TypeVar, TypeVarTuple, cast, overload

from cronloop.sync._dispatch import (
    _BATCH,
    _DONE,
    _PENDING,
    _RUNNING,
    Handle,
    LooperClosed,
    _Dispatcher,
    _spent,
    _TimedHandle,
    _wake_future,
    loop_clock,
)

__all__ = ["Handle", "Looper", "LooperClosed", "LooperStatistics"]

T = TypeVar("T")
C = TypeVar("C")
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True)
class LooperStatistics:
    """A snapshot of a :class:`Looper`."""

    #: Handlers accepted and not yet started (including delayed ones).
    pending: int
    #: 1 while a handler is executing, else 0.
    running: int
    #: Handlers that ran to completion, successfully or not.
    dispatched: int
    #: Handlers that raised an exception.
    failed: int
    #: Handlers removed before they ran (``cancel()``, ``remove()`` or dropped by ``quit``).
    cancelled: int
    #: Handlers that ran longer than ``slow_dispatch_threshold``.
    slow_dispatches: int
    #: Handlers that started later than ``slow_delivery_threshold`` after their deadline.
    slow_deliveries: int
    #: True once ``quit()``/``quit_safely()`` was called or the consumer stopped.
    closed: bool


class Looper(_Dispatcher, Generic[C]):
    """Run posted handlers one at a time, in deadline order, on the running asyncio loop.

    ``context_factory`` builds the loop-local :attr:`context` (a ``dict`` by default) that
    handlers read and write without locks. Handlers may be plain callables or coroutine
    functions; an async handler is awaited to completion before the next one starts. Equal
    deadlines run in posting order.

    Use it as ``async with Looper() as looper:`` (exit waits for due handlers: ``quit_safely``;
    exit by exception drops them: ``quit``), or ``start()`` / ``quit*()`` / ``wait_closed()``.

    ``post*`` and ``Handle.cancel`` may be called from any thread. ``slow_dispatch_threshold``
    (seconds) counts handlers that run longer and logs them (at most one line per 10 s, with
    the count of those not logged); ``slow_delivery_threshold`` does the same for handlers
    that start late (the first of each backlog is logged). ``on_error(handle, exc)`` is
    called for each failing handler after it is logged. Times are the event loop's
    (``loop.time()``).
    """

    @overload
    def __init__(
        self: Looper[dict[str, Any]],
        *,
        context_factory: None = None,
        name: str = "looper",
        slow_dispatch_threshold: float | None = 0.1,
        slow_delivery_threshold: float | None = None,
        on_error: Callable[[Handle[Any], Exception], object] | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        *,
        context_factory: Callable[[], C],
        name: str = "looper",
        slow_dispatch_threshold: float | None = 0.1,
        slow_delivery_threshold: float | None = None,
        on_error: Callable[[Handle[Any], Exception], object] | None = None,
    ) -> None: ...

    def __init__(
        self,
        *,
        context_factory: Callable[[], Any] | None = None,
        name: str = "looper",
        slow_dispatch_threshold: float | None = 0.1,
        slow_delivery_threshold: float | None = None,
        on_error: Callable[[Handle[Any], Exception], object] | None = None,
    ) -> None:
        super().__init__(name, slow_dispatch_threshold, slow_delivery_threshold, on_error)
        self._context: C = cast(C, (context_factory or dict)())
        self._clock: Callable[[], float] = _no_clock
        self._track_delivery = slow_delivery_threshold is not None
        self._ready: deque[Handle[Any]] = deque()
        self._heap: list[tuple[float, int, Handle[Any]]] = []
        self._seq = itertools.count()
        self._current: Handle[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._heap_cancels = 0

    @property
    def context(self) -> C:
        """The loop-local state handlers share; touch it only from handlers (or the loop thread)."""
        return self._context

    def time(self) -> float:
        """The event loop's clock (``loop.time()``): the time base of :meth:`post_at`."""
        return self._clock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the consumer task on the running event loop (call it on that loop)."""
        loop = self._bind_loop()
        self._clock = loop_clock(loop)
        self._task = loop.create_task(self._consume(), name=f"looper:{self._name}")

    def _apply_quit(self) -> None:
        self._close_inbox()
        if self._quit_safely:
            self._promote_due()
            for entry in self._heap:
                self._drop(entry[2])
            self._heap.clear()
        else:
            for handle in self._ready:
                self._drop(handle)
            for entry in self._heap:
                self._drop(entry[2])
            self._ready.clear()
            self._heap.clear()
        self._wake()

    async def wait_closed(self) -> None:
        """Wait until the consumer stopped (after ``quit``/``quit_safely``).

        Cancelling the waiter does not stop the looper. Re-raises an internal consumer error.
        """
        if self._task is None:
            raise self._not_started()
        await asyncio.shield(self._task)

    # -- posting ---------------------------------------------------------------------------

    @overload
    def post(self, fn: Callable[[*Ts], Coroutine[Any, Any, T]], /, *args: *Ts) -> Handle[T]: ...

    @overload
    def post(self, fn: Callable[[*Ts], T], /, *args: *Ts) -> Handle[T]: ...

    def post(self, fn: Callable[[*Ts], Any], /, *args: *Ts) -> Handle[Any]:
        """Run ``fn(*args)`` as soon as the handlers before it ran; thread-safe.

        Raises :class:`LooperClosed` after ``quit``. A post from another thread that races with
        ``quit`` may be accepted and then dropped (its handle is cancelled).
        """
        if threading.get_ident() == self._post_thread:
            # The clock is only read when something needs it: slow-delivery tracking, or
            # delayed handlers that may have fallen due and must go first.
            if self._track_delivery:
                handle: Handle[Any] = _TimedHandle(self, fn, args, self._clock())
            else:
                handle = Handle(self, fn, args)
            self._accepted += 1
            if self._heap:
                self._promote_due()
            self._ready.append(handle)
            if self._waiter is not None:
                self._wake()
            return handle
        if self._closed:
            raise LooperClosed(self._name)
        handle = self._new_handle(fn, args, 0.0)
        self._post_from_thread((handle, None))
        return handle

    @overload
    def post_delayed(
        self,
        delay: float,
        fn: Callable[[*Ts], Coroutine[Any, Any, T]],
        /,
        *args: *Ts,
    ) -> Handle[T]: ...

    @overload
    def post_delayed(self, delay: float, fn: Callable[[*Ts], T], /, *args: *Ts) -> Handle[T]: ...

    def post_delayed(self, delay: float, fn: Callable[[*Ts], Any], /, *args: *Ts) -> Handle[Any]:
        """Run ``fn(*args)`` no earlier than ``delay`` seconds from now; thread-safe."""
        if not delay >= 0 or math.isinf(delay):
            raise ValueError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
        if self._loop is None:
            raise self._not_started()
        return self._post_when(self._clock() + delay, fn, args)

    @overload
    def post_at(
        self,
        when: float,
        fn: Callable[[*Ts], Coroutine[Any, Any, T]],
        /,
        *args: *Ts,
    ) -> Handle[T]: ...

    @overload
    def post_at(self, when: float, fn: Callable[[*Ts], T], /, *args: *Ts) -> Handle[T]: ...

    def post_at(self, when: float, fn: Callable[[*Ts], Any], /, *args: *Ts) -> Handle[Any]:
        """Run ``fn(*args)`` no earlier than ``when`` (in :meth:`time` units); thread-safe.

        A deadline in the past is due at once: it runs after the handlers already due and
        before anything posted later.
        """
        if math.isnan(when) or math.isinf(when):
            raise ValueError(f"when must be a finite loop time, got {when!r}")
        return self._post_when(float(when), fn, args)

    def _post_when(self, when: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> Handle[Any]:
        if self._closed:
            raise LooperClosed(self._name)
        handle = self._new_handle(fn, args, when)
        if threading.get_ident() == self._thread_id:
            self._accepted += 1
            self._push_delayed(handle, when)
        else:
            self._post_from_thread((handle, when))
        return handle

    def _new_handle(
        self, fn: Callable[..., Any], args: tuple[Any, ...], when: float
    ) -> Handle[Any]:
        if self._track_delivery:
            return _TimedHandle(self, fn, args, when)
        return Handle(self, fn, args)

    def _accept_from_thread(self, item: tuple[Any, ...]) -> None:
        handle, when = item
        if self._inbox_closed():
            self._drop(handle)
            return
        if when is not None:
            self._push_delayed(handle, when)
            return
        if isinstance(handle, _TimedHandle):
            handle._when = self._clock()
        if self._heap:
            self._promote_due()
        self._ready.append(handle)
        if self._waiter is not None:
            self._wake()

    def _push_delayed(self, handle: Handle[Any], when: float) -> None:
        heap = self._heap
        # The consumer only needs waking if this deadline is now the earliest.
        wake = not heap or when < heap[0][0]
        heapq.heappush(heap, (when, next(self._seq), handle))
        if wake:
            self._wake()

    def _promote_due(self) -> None:
        """Move delayed handlers whose deadline passed to the tail of the ready deque.

        Called before every post joins the deque and before the consumer picks each handler, so
        the deque stays in deadline order: whatever is already in it was posted before these
        deadlines (else that post would have promoted them first). Equal deadlines keep
        posting order through the heap's sequence numbers.
        """
        heap, ready = self._heap, self._ready
        now = self._clock()
        while heap and heap[0][0] <= now:
            ready.append(heapq.heappop(heap)[2])

    def _on_cancel(self, handle: Handle[Any]) -> None:
        self._heap_cancels += 1

    # -- the consumer ----------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _compact_heap(self) -> None:
        """Drop cancelled entries once they are most of the heap (as asyncio does)."""
        self._heap_cancels = 0
        live = [entry for entry in self._heap if entry[2]._state == _PENDING]
        if len(live) * 2 < len(self._heap):
            heapq.heapify(live)
            self._heap[:] = live

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        ready, heap = self._ready, self._heap
        clock, popleft = self._clock, ready.popleft
        acquire, release = self._lock.acquire, self._lock.release
        slow_dispatch, track_delivery = self._slow_dispatch, self._track_delivery
        try:
            while True:
                if self._heap_cancels > 64 and self._heap_cancels * 2 > len(heap):
                    self._compact_heap()
                if heap:
                    self._promote_due()
                now = clock()
                budget = _BATCH
                while budget and ready:
                    handle = popleft()
                    acquire()
                    if handle._state:  # not _PENDING: cancelled while queued
                        release()
                        continue
                    handle._state = _RUNNING
                    release()
                    budget -= 1
                    fn = handle._fn
                    # Never reset: running() looks at the handle's state.
                    self._current = handle
                    if track_delivery:
                        self._check_delivery(fn, now - cast(_TimedHandle[Any], handle)._when)
                    try:
                        result = fn(*handle._args)
                        if result is not None and type(result) is CoroutineType:
                            result = await result
                    except asyncio.CancelledError:
                        self._handler_cancelled(handle)
                        self._dispatched += 1
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
                    self._dispatched += 1
                    end = clock()
                    if end - now > slow_dispatch:
                        self._slow_dispatch_seen(fn, end - now)
                    now = end
                    if heap and heap[0][0] <= now:
                        self._promote_due()
                if not budget:
                    # A full batch ran: let the event loop breathe (I/O, other tasks, posts
                    # from threads) before the next one.
                    await asyncio.sleep(0)
                elif not ready:
                    if self._closed and (not self._quit_safely or not heap):
                        return
                    await self._idle(loop)
        finally:
            self._close_flag(safely=False)  # no-op after quit(): the first call wins
            self._close_inbox()
            for leftover in ready:
                self._drop(leftover)
            for entry in heap:
                self._drop(entry[2])
            ready.clear()
            heap.clear()

    async def _idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sleep until a post arrives or the earliest delayed handler is due."""
        waiter = self._waiter = loop.create_future()
        heap = self._heap
        timer = loop.call_at(heap[0][0], _wake_future, waiter) if heap else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    # -- introspection ---------------------------------------------------------------------

    def statistics(self) -> LooperStatistics:
        """A snapshot of the counters (see :class:`LooperStatistics`)."""
        return LooperStatistics(
            pending=self._pending_count(self._running_count()),
            running=self._running_count(),
            dispatched=self._dispatched,
            failed=self._failed,
            cancelled=self._cancelled,
            slow_dispatches=self._slow_dispatches,
            slow_deliveries=self._slow_deliveries,
            closed=self._closed,
        )

    def _running_count(self) -> int:
        current = self._current
        return 1 if current is not None and current._state == _RUNNING else 0

    def __repr__(self) -> str:
        stats = self.statistics()
        return f"<Looper {self._name!r} pending={stats.pending} closed={stats.closed}>"


def _no_clock() -> float:
    raise RuntimeError("looper is not started: its clock is the event loop's, call start()")

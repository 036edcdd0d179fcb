"""What :class:`~cronloop.sync.looper.Looper` and :class:`~cronloop.sync.keyed.KeyedLooper` share.

:class:`Handle` (the receipt of a post: cancellable, awaitable on the loop, waitable from
threads), :class:`LooperClosed`, and :class:`_Dispatcher`: the lifecycle (``start`` binding,
``quit``/``quit_safely``, ``async with``), the inbox for posts from other threads, the counters
and the dispatch slow paths (slow-dispatch and slow-delivery detection, error isolation). Each
looper keeps only its queues and its consumer. The public names are re-exported by
:mod:`cronloop.sync.looper`; log records keep that module's logger name.

Why hand-written: see :mod:`cronloop.sync.looper`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

# The records keep the name users configure (and have always configured) for loopers.
logger = logging.getLogger("cronloop.sync.looper")

T = TypeVar("T")

# Handle states. A handle leaves PENDING exactly once, under the owner's lock: either the
# consumer claims it (RUNNING) or a canceller takes it (CANCELLED), so a cancel from another
# thread can never race with the start of the handler. The lock is only ever held for that
# compare-and-set, never while a handler runs, so cancel() never blocks on a handler.
_PENDING = 0
_RUNNING = 1
_DONE = 2
_FAILED = 3
_CANCELLED = 4

#: Handlers run back to back before the consumer yields to the event loop.
_BATCH = 256
#: Slow dispatches are logged at most once per this many seconds (the rest are counted and
#: the count is given with the next line): under load every handler that waits on I/O is slow.
_SLOW_LOG_INTERVAL = 10.0


class LooperClosed(RuntimeError):
    """Raised when posting to a looper after ``quit()``/``quit_safely()`` (or after it stopped)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"looper {name!r} is closed: quit() was called, it accepts no handlers")
        self.name = name


def _describe(fn: object) -> str:
    """A short name for a handler in logs (its qualified name, else its repr)."""
    return str(getattr(fn, "__qualname__", None) or repr(fn))


class _Owner:
    """What every handle needs from the loop that runs it (Looper or KeyedLooper).

    It holds the owning asyncio loop and thread, the claim lock and the cancel counter;
    subclasses add their queues and dispatch.
    """

    _name: str
    _loop: asyncio.AbstractEventLoop | None
    _thread_id: int | None
    _lock: threading.Lock
    _cancelled: int

    def _on_cancel(self, handle: Handle[Any]) -> None:
        """Called once a pending handle is cancelled (any thread); subclasses may compact."""

    def _in_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread_id


class Handle(Generic[T]):
    """The receipt of one posted handler.

    - ``cancel()`` removes it if it has not started (never affects a running handler).
    - ``await handle`` (on the looper's event loop) returns the handler's result, raises its
      exception, or raises :class:`asyncio.CancelledError` if it was cancelled or dropped.
    - ``result(timeout)`` blocks another thread until the outcome is known, bounded;
      ``concurrent_future()`` gives a :class:`concurrent.futures.Future` for composition.
    """

    __slots__ = ("_args", "_fn", "_outcome", "_owner", "_state", "_waiters")

    def __init__(self, owner: _Owner, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._owner = owner
        self._fn: Callable[..., Any] = fn
        self._args: tuple[Any, ...] = args
        self._state = _PENDING
        self._outcome: Any = None
        # Lazily created list of asyncio futures (loop thread) and concurrent futures (threads).
        self._waiters: list[asyncio.Future[None] | concurrent.futures.Future[T]] | None = None

    def __repr__(self) -> str:
        state = ("pending", "running", "done", "failed", "cancelled")[self._state]
        return f"<Handle {state} on {self._owner._name!r}>"

    # -- state ---------------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Remove the handler if it has not started; thread-safe, idempotent, never blocks.

        Returns True if this call removed it (it will never run), False if it already started,
        finished or was cancelled before.
        """
        owner = self._owner
        with owner._lock:
            if self._state != _PENDING:
                return False
            self._state = _CANCELLED
            owner._cancelled += 1
        self._settle(_CANCELLED, None)
        owner._on_cancel(self)
        return True

    def cancelled(self) -> bool:
        """True if the handler was removed (cancelled or dropped by ``quit``) before it ran."""
        return self._state == _CANCELLED

    def running(self) -> bool:
        """True while the handler is executing."""
        return self._state == _RUNNING

    def done(self) -> bool:
        """True once the handler finished (result or exception) or was cancelled."""
        return self._state >= _DONE

    # -- outcome -------------------------------------------------------------------------------

    def _outcome_now(self) -> T:
        state = self._state
        if state == _DONE:
            return cast(T, self._outcome)
        if state == _FAILED:
            raise cast(BaseException, self._outcome)
        if state == _CANCELLED:
            raise asyncio.CancelledError(f"handler on {self._owner._name!r} was cancelled")
        raise asyncio.InvalidStateError("handler has not finished")

    def __await__(self) -> Generator[Any, None, T]:
        if self._state < _DONE:
            owner = self._owner
            if owner._loop is None or not owner._in_loop_thread():
                raise RuntimeError(
                    f"await a handle of looper {owner._name!r} only on its event loop thread; "
                    "other threads use handle.result(timeout)"
                )
            fut: asyncio.Future[None] = owner._loop.create_future()
            if self._register(fut):
                try:
                    yield from fut
                finally:
                    if not fut.done():
                        # The awaiter was cancelled: forget its future, keep the handle.
                        self._unregister(fut)
        return self._outcome_now()

    def _register(self, waiter: asyncio.Future[None] | concurrent.futures.Future[T]) -> bool:
        """Add a waiter unless the handle already settled; False means "do not wait".

        Under the owner's lock because a canceller on another thread may settle the handle and
        take the waiters at the same moment.
        """
        with self._owner._lock:
            if self._state >= _DONE:
                return False
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            return True

    def _unregister(self, waiter: asyncio.Future[None]) -> None:
        with self._owner._lock:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)

    def concurrent_future(self) -> concurrent.futures.Future[T]:
        """A :class:`concurrent.futures.Future` resolved with the outcome (usable from any thread).

        A cancelled handle resolves it as cancelled. Each call returns a new future.
        """
        cf: concurrent.futures.Future[T] = concurrent.futures.Future()
        if not self._register(cf):
            self._resolve_concurrent(cf)
        return cf

    def result(self, timeout: float) -> T:
        """Block the calling thread until the handler finished; return or raise its outcome.

        Raises :class:`TimeoutError` after ``timeout`` seconds and
        :class:`concurrent.futures.CancelledError` if the handler was cancelled. Calling it on
        the looper's own thread while the handler is pending would deadlock, so that raises
        :class:`RuntimeError`; await the handle there instead.
        """
        if timeout < 0 or math.isnan(timeout):
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        if self._state < _DONE and self._owner._in_loop_thread():
            raise RuntimeError(
                f"handle.result() on the thread of looper {self._owner._name!r} would deadlock; "
                "use 'await handle'"
            )
        return self.concurrent_future().result(timeout)

    # -- settling (called by the owner or a canceller) ------------------------------------------

    def _settle(self, state: int, outcome: Any) -> None:
        self._outcome = outcome
        self._state = state
        self._fn = _spent
        self._args = ()
        if self._waiters is not None:
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Resolve every waiter; the state is already final, so no new waiter can join.

        The dispatch hot path checks ``_waiters is not None`` without the lock: a thread that
        registers concurrently re-checks the (already final) state under the lock and resolves
        its own future instead.
        """
        owner = self._owner
        with owner._lock:
            waiters, self._waiters = self._waiters, None
        if waiters is None:
            return
        on_loop = owner._in_loop_thread()
        for waiter in waiters:
            if isinstance(waiter, concurrent.futures.Future):
                self._resolve_concurrent(waiter)
            elif on_loop:
                if not waiter.done():
                    waiter.set_result(None)
            elif owner._loop is not None:
                # A closed event loop raises RuntimeError: nobody can await on it any more.
                with contextlib.suppress(RuntimeError):
                    owner._loop.call_soon_threadsafe(_wake_future, waiter)

    def _resolve_concurrent(self, cf: concurrent.futures.Future[T]) -> None:
        try:
            if self._state == _DONE:
                cf.set_result(cast(T, self._outcome))
            elif self._state == _FAILED:
                cf.set_exception(cast(BaseException, self._outcome))
            elif cf.cancel():
                cf.set_running_or_notify_cancel()
        except concurrent.futures.InvalidStateError:
            pass  # resolved by the other side of the settle/register race


def _spent() -> None:
    """Stands in for a settled handle's callable, so the handle no longer keeps it alive."""


def _wake_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _TimedHandle(Handle[T]):
    """A handle that carries its deadline or post time, for slow-delivery tracking.

    Only loopers with a ``slow_delivery_threshold`` create these: the extra slot costs every
    post time and memory (heap entries carry their own deadline for ordering).
    """

    __slots__ = ("_when",)

    def __init__(
        self, owner: _Owner, fn: Callable[..., Any], args: tuple[Any, ...], when: float
    ) -> None:
        # Spelled out rather than calling super().__init__: this runs once per post.
        self._owner = owner
        self._fn = fn
        self._args = args
        self._state = _PENDING
        self._outcome = None
        self._waiters = None
        self._when = when


class _Dispatcher(_Owner):
    """Bookkeeping shared by Looper and KeyedLooper: lifecycle flags, inbox, counters, logs."""

    def __init__(
        self,
        name: str,
        slow_dispatch_threshold: float | None,
        slow_delivery_threshold: float | None,
        on_error: Callable[[Handle[Any], Exception], object] | None,
    ) -> None:
        self._name = _check_name(name)
        self._slow_dispatch = _check_threshold("slow_dispatch_threshold", slow_dispatch_threshold)
        self._slow_delivery = _check_threshold("slow_delivery_threshold", slow_delivery_threshold)
        self._on_error = on_error
        self._loop = None
        self._thread_id = None
        # The loop thread's id while posts are accepted, else None: one comparison tells a post
        # both "open" and "on the loop thread" (the fast path).
        self._post_thread: int | None = None
        self._lock = threading.Lock()
        # Handlers accepted on the loop thread / from other threads (the latter under the lock,
        # as several threads may post at once); pending = accepted - started - cancelled.
        self._accepted = 0
        self._accepted_foreign = 0
        self._closed = False
        self._quit_safely = False
        self._dispatched = 0
        self._failed = 0
        self._cancelled = 0
        self._slow_dispatches = 0
        self._slow_unlogged = 0
        self._slow_log_after = -math.inf
        self._slow_deliveries = 0
        self._delivery_lagging = False
        # Posts from other threads land here (deque.append is atomic) and one coalesced
        # call_soon_threadsafe moves them to the loop: FIFO per poster, one wakeup per burst.
        self._inbox: deque[tuple[Any, ...]] = deque()
        self._inbox_kicked = False
        # Cleared once quit took effect on the loop: a post still in the inbox then lost the
        # race with quit and is dropped (its handle cancelled).
        self._inbox_open = True

    @property
    def name(self) -> str:
        """The name used in logs, errors and the consumer task's name."""
        return self._name

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Bind to the running event loop and start dispatching (call it on that loop)."""
        raise NotImplementedError

    async def wait_closed(self) -> None:
        """Wait until dispatching stopped (after ``quit``/``quit_safely``)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.quit_safely()
        else:
            self.quit()
        await self.wait_closed()

    def quit(self) -> None:
        """Stop: drop every handler not started yet (handles cancelled); running ones finish.

        Thread-safe. The first of ``quit``/``quit_safely`` wins; later calls do nothing.
        """
        self._request_quit(safely=False)

    def quit_safely(self) -> None:
        """Stop accepting posts, run the handlers already queued, then stop.

        A :class:`~cronloop.sync.looper.Looper` runs every handler already due and drops those
        with a future deadline. Thread-safe. The first of ``quit``/``quit_safely`` wins; later
        calls do nothing.
        """
        self._request_quit(safely=True)

    def _request_quit(self, *, safely: bool) -> None:
        if not self._close_flag(safely):
            return
        if self._loop is None:
            return  # never started, so nothing was ever accepted
        if self._in_loop_thread():
            self._apply_quit()
        else:
            # A closed event loop raises RuntimeError: its consumers are gone already.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._apply_quit)

    def _apply_quit(self) -> None:
        """On the loop thread, once: drop what quit() drops and wake the consumers."""
        raise NotImplementedError

    def remove(self, handle: Handle[Any]) -> bool:
        """Cancel ``handle`` if it is still pending (see :meth:`Handle.cancel`)."""
        if handle._owner is not self:
            raise ValueError(f"handle {handle!r} was not posted to looper {self._name!r}")
        return handle.cancel()

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None:
            raise RuntimeError(f"looper {self._name!r} was already started")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._thread_id = threading.get_ident()
        if not self._closed:
            self._post_thread = self._thread_id
        return loop

    def _not_started(self) -> RuntimeError:
        return RuntimeError(
            f"looper {self._name!r} is not started: call start() on its event loop "
            "or use 'async with'"
        )

    def _close_flag(self, safely: bool) -> bool:
        """Set the closed flag; True if this call was the first (first call wins)."""
        with self._lock:
            if self._closed:
                return False
            # The consumer reads these without the lock: the mode must be visible first.
            self._quit_safely = safely
            self._post_thread = None
            self._closed = True
            return True

    def _post_from_thread(self, item: tuple[Any, ...]) -> None:
        """Hand a post from another thread to the loop; the caller saw the looper open."""
        if threading.get_ident() == self._thread_id:
            raise LooperClosed(self._name)  # closed between the caller's checks
        self._count_foreign_post(1)
        try:
            self._send_from_thread(item)
        except BaseException:
            self._count_foreign_post(-1)
            raise

    def _send_from_thread(self, item: tuple[Any, ...]) -> None:
        loop = self._loop
        if loop is None:
            raise self._not_started()
        self._inbox.append(item)
        if not self._inbox_kicked:
            self._inbox_kicked = True
            try:
                loop.call_soon_threadsafe(self._drain_inbox)
            except RuntimeError as exc:  # the event loop is closed
                self._inbox_kicked = False  # so the next poster learns it too
                raise LooperClosed(self._name) from exc

    def _drain_inbox(self) -> None:
        # Reset the flag before draining: an append that saw the flag still set happened
        # before this reset, so this drain sees it.
        self._inbox_kicked = False
        inbox = self._inbox
        while inbox:
            self._accept_from_thread(inbox.popleft())

    def _accept_from_thread(self, item: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def _inbox_closed(self) -> bool:
        """True if a post arriving from another thread now must be dropped."""
        return not self._inbox_open or (self._closed and not self._quit_safely)

    def _close_inbox(self) -> None:
        """Accept (or drop) what other threads posted before quit; drop anything later."""
        self._drain_inbox()
        self._inbox_open = False

    def _count_foreign_post(self, delta: int) -> None:
        with self._lock:
            self._accepted_foreign += delta

    def _pending_count(self, running: int) -> int:
        accepted = self._accepted + self._accepted_foreign
        return max(0, accepted - self._dispatched - running - self._cancelled)

    def _drop(self, handle: Handle[Any]) -> None:
        """Cancel a handle that quit() dropped (if nobody cancelled it first)."""
        with self._lock:
            if handle._state != _PENDING:
                return
            handle._state = _CANCELLED
            self._cancelled += 1
        handle._settle(_CANCELLED, None)

    # -- dispatch slow paths ---------------------------------------------------------------

    def _handler_failed(self, handle: Handle[Any], fn: Callable[..., Any], exc: Exception) -> None:
        """Record a handler's exception (called inside its ``except`` block)."""
        self._failed += 1
        logger.exception("handler %s on looper %r failed", _describe(fn), self._name)
        handle._settle(_FAILED, exc)
        if self._on_error is not None:
            try:
                self._on_error(handle, exc)
            except Exception:
                logger.exception("on_error callback of looper %r failed", self._name)

    def _handler_cancelled(self, handle: Handle[Any]) -> None:
        """The handler itself raised CancelledError: it ran, and its handle ends cancelled."""
        handle._settle(_CANCELLED, None)

    def _slow_dispatch_seen(self, fn: Callable[..., Any], took: float) -> None:
        self._slow_dispatches += 1
        now = time.monotonic()
        if now < self._slow_log_after:
            self._slow_unlogged += 1
            return
        self._slow_log_after = now + _SLOW_LOG_INTERVAL
        unlogged, self._slow_unlogged = self._slow_unlogged, 0
        logger.warning(
            "slow dispatch on looper %r: handler %s took %.1f ms%s",
            self._name,
            _describe(fn),
            took * 1000,
            f" ({unlogged} more slow ones not logged since the last)" if unlogged else "",
        )

    def _check_delivery(self, fn: Callable[..., Any], lag: float) -> None:
        """A handler starts ``lag`` seconds after its deadline (or post time).

        Like Android, only the first slow delivery of a backlog is logged; the rest are counted
        until a handler is delivered on time again ("drained").
        """
        if lag <= self._slow_delivery:
            if self._delivery_lagging:
                self._delivery_drained()
            return
        self._slow_deliveries += 1
        if not self._delivery_lagging:
            self._delivery_lagging = True
            logger.warning(
                "slow delivery on looper %r: handler %s started %.1f ms after its deadline",
                self._name,
                _describe(fn),
                lag * 1000,
            )

    def _delivery_drained(self) -> None:
        self._delivery_lagging = False
        logger.info("looper %r drained its slow-delivery backlog", self._name)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    return name


def _check_threshold(field: str, value: float | None) -> float:
    if value is None:
        return math.inf
    if not value > 0:
        raise ValueError(f"{field} must be a positive number of seconds or None, got {value!r}")
    return float(value)


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """The fastest callable that reads ``loop``'s clock.

    The stock ``loop.time()`` is ``time.monotonic()`` behind a Python-level call; calling the C
    function directly makes a post markedly cheaper. Patched or third-party loops (looptime's
    fake clock, uvloop) keep their own.
    """
    stock = type(loop).time is asyncio.BaseEventLoop.time
    return time.monotonic if stock else loop.time

"""Loop-owned one-shot timers whose ``cancel`` is final, and the ``Dispatcher`` they post to.

This module holds :class:`Timer`, :class:`TimerStatistics` and the :class:`Dispatcher`
protocol that a serial owner (the ``Looper``) satisfies.

Why hand-written: ``loop.call_at`` is the clock underneath, but its ``Handle.cancel`` is only
definitive on the loop thread and knows nothing of an owner that runs callbacks later. Seed 001
is the bug this prevents: the deadline passes, the timer hands its callback to the owner's queue,
an event already in that queue cancels the timer, and the stale callback runs anyway (then
re-arms itself, and the canceller has lost the race for good). Go's ``Timer.Stop`` has the same
hole ("Stop does not wait for f"), and a blocking cancel channel deadlocks when two events cancel
at once. No library offers "cancel from any thread, never blocks, and the callback never runs
after cancel returned", so it is written here.

The technique is a generation number. Every ``start`` and every ``cancel`` bumps it; the
expiry posts ``(generation)`` to the owner, and the owner-side dispatch runs the callback only if
the timer is still armed with that generation. The check and the claim happen under one tiny
``threading.Lock`` that guards a handful of attribute reads and writes: no callback, no
``post``, no I/O and no wait ever runs while it is held, so it cannot block anyone for longer
than those few instructions, and two cancellers can never deadlock on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Dispatcher", "Timer", "TimerStatistics"]


class Dispatcher(Protocol):
    """A serial owner: the loop that timers and state machines belong to.

    ``post`` must be safe to call from any thread and must run ``fn(*args)`` later, one call at
    a time, in posting order, on the owner's loop. A ``Looper`` satisfies it. If ``post``
    returns ``False`` (or raises) the owner has refused the work (it is shutting down) and the
    work will never run; any other return value means it was accepted.
    """

    def post(self, fn: Callable[..., object], /, *args: object) -> object:
        """Queue ``fn(*args)`` to run serially on the owner's loop."""
        ...


@dataclass(frozen=True)
class TimerStatistics:
    """Counters of one :class:`Timer` since it was created.

    ``armed``: calls to ``start``/``start_at``. ``fired``: callbacks that ran (were claimed).
    ``cancelled``: ``cancel`` calls that prevented a callback. ``stale``: expiries that reached
    the owner after the arming they belonged to had been cancelled or replaced (the seed-001
    race, caught). ``refused``: expiries the dispatcher refused to queue. ``active``: armed now.
    """

    armed: int
    fired: int
    cancelled: int
    stale: int
    refused: int
    active: bool


class Timer:
    """A one-shot timer owned by a loop, with a final, non-blocking, thread-safe ``cancel``.

    ``callback()`` runs once per arming, ``delay`` seconds of loop time after ``start``. With a
    ``dispatcher`` it runs through ``dispatcher.post`` on the owner's serial loop; without one it
    runs directly on the asyncio ``loop`` (the running loop when the timer is created, unless
    ``loop`` is given).

    Guarantees:

    - ``start``/``start_at`` on an armed timer replace the arming (Go's ``Reset``): the old
      deadline can no longer fire, even if its expiry was already queued on the owner.
    - ``cancel`` never blocks and never waits for a running callback; it is idempotent and safe
      from any thread and from many cancellers at once. Once it has returned, the callback of
      the arming it saw will not run.
    - Re-arming from inside the callback (or from any thread) leaves exactly one live arming.

    All methods may be called from any thread; the loop must be running for a timer to fire.
    """

    __slots__ = (
        "_armed",
        "_callback",
        "_counts",
        "_deadline",
        "_dispatcher",
        "_generation",
        "_handle",
        "_handle_generation",
        "_lock",
        "_loop",
        "_name",
    )

    def __init__(
        self,
        callback: Callable[[], object],
        *,
        dispatcher: Dispatcher | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        name: str | None = None,
    ) -> None:
        if not callable(callback):
            raise TypeError(f"Timer callback must be callable, got {callback!r}")
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "Timer needs an event loop: create it on the loop's thread or pass loop="
                ) from None
        self._callback = callback
        self._dispatcher = dispatcher
        self._loop = loop
        self._name = name or getattr(callback, "__qualname__", repr(callback))
        self._lock = threading.Lock()
        self._generation = 0
        # Generation of the live arming, None when disarmed. Guarded by _lock.
        self._armed: int | None = None
        self._deadline: float | None = None
        # armed, fired, cancelled, stale, refused. Guarded by _lock.
        self._counts = [0, 0, 0, 0, 0]
        # The loop's handle; only ever touched on the loop thread (Handle is not thread-safe).
        self._handle: asyncio.TimerHandle | None = None
        self._handle_generation = 0

    def __repr__(self) -> str:
        state = f"armed deadline={self._deadline}" if self._armed is not None else "idle"
        return f"<Timer {self._name} {state}>"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop whose clock drives this timer."""
        return self._loop

    @property
    def active(self) -> bool:
        """True while an arming is pending: not yet fired, cancelled or replaced."""
        return self._armed is not None

    @property
    def deadline(self) -> float | None:
        """The loop time the live arming is due at, or None when the timer is not active."""
        with self._lock:
            return self._deadline if self._armed is not None else None

    def start(self, delay: float) -> bool:
        """Arm the timer to fire ``delay`` seconds of loop time from now (a negative delay is 0).

        Replaces any live arming; returns True if one was live (like Go's ``Reset``), in which
        case its callback will not run.
        """
        if delay != delay:
            raise ValueError(f"Timer {self._name}: delay must be a number, got {delay!r}")
        return self.start_at(self._loop.time() + (delay if delay > 0 else 0.0))

    def start_at(self, when: float) -> bool:
        """Arm the timer to fire at loop time ``when``; see :meth:`start`."""
        if when != when:  # NaN would poison the loop's timer heap.
            raise ValueError(f"Timer {self._name}: deadline must be a number, got {when!r}")
        with self._lock:
            replaced = self._armed is not None
            self._generation += 1
            generation = self._generation
            self._armed = generation
            self._deadline = when
            self._counts[0] += 1
        loop = self._loop
        if asyncio._get_running_loop() is loop:
            # On the loop thread: schedule now, without the generation check of _schedule. A
            # cancel or start from another thread in between is harmless: the expiry of a
            # dead generation is ignored, and their own follow-ups replace or drop this handle.
            if self._handle is not None:
                self._handle.cancel()
            self._handle = loop.call_at(when, self._expire, generation)
            self._handle_generation = generation
        else:
            loop.call_soon_threadsafe(self._schedule, generation, when)
        return replaced

    def cancel(self) -> bool:
        """Disarm the timer. Never blocks; safe from any thread; idempotent.

        Returns True if this call prevented the callback (it had not been claimed by the
        owner yet, even if its deadline had passed and it sat in the owner's queue). Returns
        False if the timer was not armed, or its callback has already started: like Go's
        ``Stop``, this does not wait for a running callback.
        """
        with self._lock:
            if self._armed is None:
                return False
            self._armed = None
            self._generation += 1
            self._counts[2] += 1
        # Dropping the loop handle only saves heap space: a stale handle's expiry is ignored.
        if asyncio._get_running_loop() is self._loop:
            handle = self._handle
            if handle is not None:
                self._handle = None
                handle.cancel()
        elif not self._loop.is_closed():
            # Closed between the check and the call: then there is nothing left to drop.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._drop_handle)
        return True

    def statistics(self) -> TimerStatistics:
        """A snapshot of this timer's counters."""
        with self._lock:
            armed, fired, cancelled, stale, refused = self._counts
            return TimerStatistics(armed, fired, cancelled, stale, refused, self._armed is not None)

    # -- loop thread ------------------------------------------------------------------------

    def _schedule(self, generation: int, when: float) -> None:
        if self._armed != generation:  # already replaced or cancelled before we got here
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(when, self._expire, generation)
        self._handle_generation = generation

    def _drop_handle(self) -> None:
        handle = self._handle
        if handle is not None and self._armed != self._handle_generation:
            handle.cancel()
            self._handle = None

    def _expire(self, generation: int) -> None:
        if self._handle_generation == generation:
            self._handle = None
        if self._dispatcher is None:
            self._dispatch(generation)
            return
        if self._armed != generation:  # a cheap early exit; the real check is in _dispatch
            return
        try:
            accepted = self._dispatcher.post(self._dispatch, generation) is not False
        except BaseException:
            self._refused(generation)
            raise  # to the loop's exception handler: the owner is broken, say so loudly
        if not accepted:
            self._refused(generation)

    def _refused(self, generation: int) -> None:
        # The owner will never run this arming: disarm it rather than leave it active forever.
        with self._lock:
            if self._armed == generation:
                self._armed = None
                self._counts[4] += 1

    # -- owner's loop -----------------------------------------------------------------------

    def _dispatch(self, generation: int) -> None:
        with self._lock:
            if self._armed != generation:
                self._counts[3] += 1
                return
            # The claim: from here on cancel() returns False and this callback runs.
            self._armed = None
            self._counts[1] += 1
        self._callback()

"""Seed 001 reproduced: timer-cancel races in a handshake state machine, made deterministic.

1. An expired timer's callback is queued on the owner behind an event that cancels the timer.
   The naive timer (``loop.call_at`` posting the work, no generation check) runs the stale
   callback; :class:`Timer` does not.
2. Several cancellers at once (threads and the loop) never deadlock and the callback runs zero
   times.
3. A timeout callback that re-arms itself while being cancelled: never a lost timer, never a
   duplicate firing.
4. A hypothesis search over interleavings of start / cancel / expiry / dispatch.

Interleavings are forced with a held dispatcher, barriers and events, never with sleeps; thread
joins are bounded.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cronloop.sync.timer import Dispatcher, Timer
from tests.sync.test_timer import QueueDispatcher, serial_dispatcher


class NaiveTimer:
    """Seed 001's first attempt: the expiry posts the callback; cancel only stops the clock."""

    def __init__(self, callback: Callable[[], object], dispatcher: Dispatcher) -> None:
        self._callback = callback
        self._dispatcher = dispatcher
        self._handle: asyncio.TimerHandle | None = None

    def start(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(delay, self._dispatcher.post, self._callback)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()  # a no-op once the expiry has posted the callback


# -- 1. expired but not yet run vs cancel --------------------------------------------------------


@pytest.mark.looptime
async def test_naive_timer_runs_a_stale_callback_after_cancel() -> None:
    async with serial_dispatcher() as dispatcher:
        runs: list[str] = []
        naive = NaiveTimer(lambda: runs.append("timeout"), dispatcher)
        naive.start(1)
        dispatcher.hold()
        dispatcher.post(naive.cancel)  # the packet event that cancels the timeout
        await asyncio.sleep(2)  # deadline passes: the expiry queues the callback behind it
        assert dispatcher.pending == 2
        dispatcher.release()
        await dispatcher.join()
        assert runs == ["timeout"]  # the bug: it ran although cancel ran first


@pytest.mark.looptime
async def test_timer_never_runs_a_callback_queued_before_cancel() -> None:
    async with serial_dispatcher() as dispatcher:
        runs: list[str] = []
        cancelled: list[bool] = []
        timer = Timer(lambda: runs.append("timeout"), dispatcher=dispatcher)
        timer.start(1)
        dispatcher.hold()
        dispatcher.post(lambda: cancelled.append(timer.cancel()))
        await asyncio.sleep(2)
        assert dispatcher.pending == 2  # same interleaving as the naive timer
        dispatcher.release()
        await dispatcher.join()
        assert cancelled == [True]
        assert runs == []
        assert timer.statistics().stale == 1


# -- 2. concurrent cancels -----------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(50))
async def test_concurrent_cancels_never_deadlock_and_prevent_the_callback(round_: int) -> None:
    async with serial_dispatcher() as dispatcher:
        runs: list[int] = []
        timer = Timer(lambda: runs.append(round_), dispatcher=dispatcher)
        dispatcher.hold()
        fired = asyncio.Event()
        dispatcher.post(fired.set)
        timer.start(0)  # already due: its dispatch will queue behind fired.set
        await dispatcher.wait_pending(2)
        barrier = threading.Barrier(3, timeout=5)
        results: list[bool] = []
        lock = threading.Lock()

        def cancel_from_thread() -> None:
            barrier.wait()
            outcome = timer.cancel()
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=cancel_from_thread) for _ in range(2)]
        for thread in threads:
            thread.start()
        barrier.wait()  # the loop thread joins the race as the third canceller
        loop_outcome = timer.cancel()
        for thread in threads:
            thread.join(5)
            assert not thread.is_alive(), "a canceller deadlocked"
        dispatcher.release()
        await dispatcher.join()
        assert sorted([*results, loop_outcome]) == [False, False, True]
        assert runs == []
        assert not timer.active


# -- 3. the timeout callback re-arms itself while being cancelled --------------------------------


@pytest.mark.looptime
async def test_naive_self_rearming_timeout_survives_its_cancel() -> None:
    async with serial_dispatcher() as dispatcher:
        runs: list[float] = []
        loop = asyncio.get_running_loop()
        naive: NaiveTimer

        def syn_callback() -> None:  # seed 001: "resend SYN and reschedule myself"
            runs.append(loop.time())
            naive.start(3)

        naive = NaiveTimer(syn_callback, dispatcher)
        naive.start(3)
        dispatcher.hold()
        dispatcher.post(naive.cancel)  # SYN-ACK arrived: stop retransmitting
        await asyncio.sleep(4)
        dispatcher.release()
        await asyncio.sleep(30)
        await dispatcher.join()
        assert len(runs) > 1  # the bug: the cancelled timeout keeps re-arming itself
        naive.cancel()


@pytest.mark.looptime
async def test_self_rearming_timeout_cancelled_before_it_is_claimed() -> None:
    async with serial_dispatcher() as dispatcher:
        runs: list[float] = []
        loop = asyncio.get_running_loop()
        timer: Timer

        def syn_callback() -> None:
            runs.append(loop.time())
            timer.start(3)

        timer = Timer(syn_callback, dispatcher=dispatcher)
        timer.start(3)
        dispatcher.hold()
        outcome: list[bool] = []
        dispatcher.post(lambda: outcome.append(timer.cancel()))
        await asyncio.sleep(4)
        dispatcher.release()
        await asyncio.sleep(30)
        await dispatcher.join()
        assert outcome == [True]
        assert runs == []
        assert not timer.active


async def test_self_rearming_timeout_cancelled_while_its_callback_runs() -> None:
    """A thread cancels after the callback was claimed and before it re-arms."""
    async with serial_dispatcher() as dispatcher:
        claimed = threading.Event()
        cancelled = threading.Event()
        done = asyncio.Event()
        runs: list[int] = []
        timer: Timer

        def syn_callback() -> None:
            runs.append(1)
            claimed.set()
            assert cancelled.wait(5)  # hold the owner until the canceller has run
            assert timer.start(3600) is False  # exactly one new arming, nothing to replace
            done.set()

        timer = Timer(syn_callback, dispatcher=dispatcher)
        outcomes: list[bool] = []

        def canceller() -> None:
            assert claimed.wait(5)
            outcomes.append(timer.cancel())  # the callback already started: Go's Stop == false
            cancelled.set()

        thread = threading.Thread(target=canceller)
        thread.start()
        timer.start(0)
        async with asyncio.timeout(5):
            await done.wait()
        thread.join(5)
        assert not thread.is_alive()
        assert outcomes == [False]
        assert runs == [1]
        # The re-arm is not lost: one live arming that a second cancel stops for good.
        assert timer.statistics().active
        assert timer.cancel() is True
        assert not timer.active
        assert timer.statistics().armed == 2


async def _rearm_races_cancel(dispatcher: QueueDispatcher) -> None:
    barrier = threading.Barrier(2, timeout=5)
    done = asyncio.Event()
    runs: list[int] = []
    timer: Timer

    def syn_callback() -> None:
        runs.append(1)
        barrier.wait()
        timer.start(3600)
        done.set()

    timer = Timer(syn_callback, dispatcher=dispatcher)
    outcome: list[bool] = []

    def canceller() -> None:
        barrier.wait()
        outcome.append(timer.cancel())

    thread = threading.Thread(target=canceller)
    thread.start()
    timer.start(0)
    async with asyncio.timeout(5):
        await done.wait()
    thread.join(5)
    assert not thread.is_alive()
    assert runs == [1]
    # Either the cancel came first (False: nothing was armed, so the re-arm is live) or it
    # stopped the re-arm (True). Exactly what the outcome says is live, never two armings.
    assert timer.active is (outcome == [False])
    timer.cancel()
    assert timer.statistics().active is False


async def test_self_rearming_timeout_racing_a_cancel_from_another_thread() -> None:
    """Barrier-aligned race of the callback's re-arm and a foreign cancel, many rounds."""
    async with serial_dispatcher() as dispatcher:
        for _ in range(100):
            await _rearm_races_cancel(dispatcher)


# -- 4. hypothesis over interleavings -------------------------------------------------------------


@dataclass(order=True)
class _Scheduled:
    when: float
    seq: int
    fn: Callable[..., object] = field(compare=False)
    args: tuple[object, ...] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Just enough of an event loop for :class:`Timer`, with every step driven by the test.

    Timer sees it as a foreign loop, so every start/cancel takes the cross-thread path
    (``call_soon_threadsafe``): the hardest case, with the most interleaving points.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.ready: list[tuple[Callable[..., object], tuple[object, ...]]] = []
        self.timers: list[_Scheduled] = []
        self.seq = itertools.count()

    def time(self) -> float:
        return self.now

    def is_closed(self) -> bool:
        return False

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: object) -> None:
        self.ready.append((fn, args))

    def call_at(self, when: float, fn: Callable[..., object], *args: object) -> _Scheduled:
        entry = _Scheduled(when, next(self.seq), fn, args)
        heapq.heappush(self.timers, entry)
        return entry

    def run_ready(self) -> bool:
        if not self.ready:
            return False
        fn, args = self.ready.pop(0)
        fn(*args)
        return True

    def fire_next(self) -> bool:
        while self.timers and self.timers[0].cancelled:
            heapq.heappop(self.timers)
        if not self.timers:
            return False
        entry = heapq.heappop(self.timers)
        self.now = max(self.now, entry.when)
        entry.fn(*entry.args)
        return True


class ManualDispatcher:
    def __init__(self) -> None:
        self.queue: list[tuple[Callable[..., object], tuple[object, ...]]] = []

    def post(self, fn: Callable[..., object], /, *args: object) -> object:
        self.queue.append((fn, args))
        return True

    def run_one(self) -> bool:
        if not self.queue:
            return False
        fn, args = self.queue.pop(0)
        fn(*args)
        return True


OPS = st.one_of(
    st.tuples(st.just("start"), st.integers(0, 5)),
    st.tuples(st.just("rearming_start"), st.integers(0, 5)),
    st.tuples(st.just("cancel"), st.just(0)),
    st.tuples(st.just("run_ready"), st.just(0)),
    st.tuples(st.just("fire"), st.just(0)),
    st.tuples(st.just("dispatch"), st.just(0)),
)


@given(st.lists(OPS, max_size=60))
async def test_interleavings_fire_at_most_once_and_never_after_cancel(
    ops: list[tuple[str, int]],
) -> None:
    loop = FakeLoop()
    dispatcher = ManualDispatcher()
    arming = 0  # the test's own count of armings, matched against the callback's view
    rearm: dict[int, int] = {}  # arming -> delay the callback re-arms with
    fired: list[int] = []
    deadlines: dict[int, float] = {}
    dead: set[int] = set()  # armings a returned cancel or start has superseded
    live: int | None = None

    def callback() -> None:
        nonlocal arming, live
        assert live is not None, "callback ran with no live arming"
        assert live not in dead, f"arming {live} ran after it was cancelled or replaced"
        assert live not in fired, f"arming {live} fired twice"
        assert loop.now >= deadlines[live], "fired before its deadline"
        fired.append(live)
        current = live
        live = None
        if current in rearm:
            arming += 1
            live = arming
            deadlines[live] = loop.now + rearm[current]
            timer.start(rearm[current])

    timer = Timer(callback, dispatcher=dispatcher, loop=cast(asyncio.AbstractEventLoop, loop))
    for op, delay in ops:
        if op in ("start", "rearming_start"):
            was_live = live is not None
            if live is not None:
                dead.add(live)
            arming += 1
            live = arming
            deadlines[live] = loop.now + delay
            if op == "rearming_start":
                rearm[live] = delay + 1
            replaced = timer.start(delay)
            assert replaced is was_live
        elif op == "cancel":
            outcome = timer.cancel()
            assert outcome is (live is not None)
            if live is not None:
                dead.add(live)
                live = None
        elif op == "run_ready":
            loop.run_ready()
        elif op == "fire":
            loop.fire_next()
        else:
            dispatcher.run_one()
        assert timer.active is (live is not None)

    # Liveness: with nothing more cancelled, a live arming fires exactly once.
    rearm.clear()
    pending = live
    for _ in range(1000):
        if not (loop.run_ready() or dispatcher.run_one() or loop.fire_next()):
            break
    if pending is not None:
        assert fired[-1] == pending
    assert not timer.active
    assert set(fired).isdisjoint(dead)

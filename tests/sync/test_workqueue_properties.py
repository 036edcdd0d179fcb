"""A RuleBasedStateMachine drives a RateLimitingQueue against a plain model of client-go rules.

Random interleavings of add / add_after / add_rate_limited / get (blocking getters and
get_nowait) / done / time passing / shutdown are applied to the real queue, which runs on an
event loop whose clock only moves when the machine says so, and to a model made of a list, two
sets and a dict. After every step they must agree exactly, which checks FIFO fairness, dedup
while dirty, "never handed out while processing" and earliest-ready-time-wins; at the end every
key that was added is handed out unless the queue was shut down.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cronloop.sync.ratelimit import ItemExponentialFailureRateLimiter
from cronloop.sync.workqueue import RateLimitingQueue, ShutDown, WouldBlock

KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
DELAYS = st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.5, 4.0, 10.0])


class ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when ``advance`` is called."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now


class Model:
    """client-go's rules, written as plainly as possible."""

    def __init__(self) -> None:
        self.queue: list[str] = []
        self.dirty: set[str] = set()
        self.processing: set[str] = set()
        self.waiting: dict[str, tuple[float, int]] = {}
        self.failures: dict[str, int] = {}
        self.seq = itertools.count()
        self.shut = False
        self.now = 1000.0

    def add(self, key: str) -> None:
        if self.shut or key in self.dirty:
            return
        self.dirty.add(key)
        if key not in self.processing:
            self.queue.append(key)

    def add_after(self, key: str, delay: float) -> None:
        if self.shut:
            return
        if delay <= 0:
            self.add(key)
            return
        ready = self.now + delay
        if key not in self.waiting or ready < self.waiting[key][0]:
            self.waiting[key] = (ready, next(self.seq))

    def add_rate_limited(self, key: str) -> None:
        if self.shut:
            return
        n = self.failures.get(key, 0)
        self.failures[key] = n + 1
        self.add_after(key, min(0.5 * 2.0**n, 8.0))

    def advance(self, dt: float) -> None:
        self.now += dt
        due = sorted((ready, key) for key, ready in self.waiting.items() if ready[0] <= self.now)
        for _, key in due:
            del self.waiting[key]
            self.add(key)

    def take(self) -> str:
        key = self.queue.pop(0)
        self.dirty.discard(key)
        self.processing.add(key)
        return key

    def done(self, key: str) -> None:
        self.processing.remove(key)
        if key in self.dirty:
            self.queue.append(key)

    def shutdown(self) -> None:
        self.shut = True
        self.waiting.clear()


class WorkQueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = ManualClockLoop()
        self.model = Model()

        async def make() -> RateLimitingQueue[str]:
            # Created inside the loop, so the queue binds to it (add_after needs its timers).
            return RateLimitingQueue(ItemExponentialFailureRateLimiter(0.5, 8.0), clock=self.clock)

        self.queue = self.loop.run_until_complete(make())
        self.taken: list[str | ShutDown] = []
        self.getters: list[asyncio.Task[None]] = []
        # Keys added since they were last handed out: each must be handed out again.
        self.owed: set[str] = set()

    def clock(self) -> float:
        return self.loop.now

    # -- helpers -----------------------------------------------------------------------------

    def settle(self) -> None:
        """Run the loop until every task is blocked, then check what getters took."""
        for _ in range(5):
            self.loop.run_until_complete(asyncio.sleep(0))
        self.getters = [t for t in self.getters if not t.done()]
        for outcome in self.taken:
            if isinstance(outcome, ShutDown):
                assert self.model.shut
                assert not self.model.queue, "ShutDown raised while keys were queued"
            else:
                self.check_take(outcome)
        self.taken.clear()

    def check_take(self, key: str) -> None:
        assert key not in self.model.processing, f"{key} handed out while being processed"
        assert key == self.model.take(), "not FIFO"
        self.owed.discard(key)

    async def getter(self) -> None:
        try:
            self.taken.append(await self.queue.get())
        except ShutDown as exc:
            self.taken.append(exc)

    def owe(self, key: str) -> None:
        if not self.model.shut:
            self.owed.add(key)

    def finish(self, key: str) -> None:
        self.model.done(key)
        self.queue.done(key)
        self.settle()

    def run(self, action: Callable[[], None]) -> None:
        action()
        self.settle()

    # -- rules -------------------------------------------------------------------------------

    @rule(key=KEYS)
    def add(self, key: str) -> None:
        self.owe(key)
        self.model.add(key)
        self.run(lambda: self.queue.add(key))

    @rule(key=KEYS, delay=DELAYS)
    def add_after(self, key: str, delay: float) -> None:
        self.owe(key)
        self.model.add_after(key, delay)
        self.run(lambda: self.queue.add_after(key, delay))

    @rule(key=KEYS)
    def add_rate_limited(self, key: str) -> None:
        self.owe(key)
        self.model.add_rate_limited(key)
        self.run(lambda: self.queue.add_rate_limited(key))

    @rule(key=KEYS)
    def forget(self, key: str) -> None:
        self.model.failures.pop(key, None)
        self.queue.forget(key)

    @rule(dt=st.sampled_from([0.25, 0.5, 1.0, 3.0, 20.0]))
    def advance(self, dt: float) -> None:
        self.loop.now += dt
        self.model.advance(dt)
        self.settle()

    @rule()
    def get_nowait(self) -> None:
        try:
            key = self.queue.get_nowait()
        except WouldBlock:
            assert not self.model.queue
            assert not self.model.shut
        except ShutDown:
            assert not self.model.queue
            assert self.model.shut
        else:
            self.check_take(key)
        self.settle()

    @precondition(lambda self: len(self.getters) < 3)
    @rule()
    def start_getter(self) -> None:
        self.getters.append(self.loop.create_task(self.getter()))
        self.settle()

    @precondition(lambda self: bool(self.model.processing))
    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        self.finish(data.draw(st.sampled_from(sorted(self.model.processing))))

    @rule()
    def shutdown(self) -> None:
        self.model.shutdown()
        self.run(self.queue.shutdown)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def agrees_with_model(self) -> None:
        stats = self.queue.statistics()
        assert len(self.queue) == len(self.model.queue)
        assert stats.dirty == len(self.model.dirty)
        assert stats.processing == len(self.model.processing)
        assert stats.delayed == len(self.model.waiting)
        assert stats.shutting_down == self.model.shut
        assert stats.waiting_getters == len(self.getters)
        for key in self.model.failures:
            assert self.queue.num_requeues(key) == self.model.failures[key]

    @invariant()
    def nothing_is_lost(self) -> None:
        # Every dirty key is either queued or will be re-queued by its worker's done().
        for key in self.model.dirty:
            assert key in self.model.queue or key in self.model.processing
        assert len(set(self.model.queue)) == len(self.model.queue), "a key queued twice"

    def teardown(self) -> None:
        try:
            if not self.model.shut:
                # Finish all work, let every delay expire: every key added is handed out.
                for _ in range(50):
                    for key in sorted(self.model.processing):
                        self.finish(key)
                    self.advance(20.0)
                    while self.model.queue:
                        self.get_nowait()
                    if not (self.model.processing or self.model.waiting or self.model.queue):
                        break
                assert not self.owed, f"never handed out: {sorted(self.owed)}"
            self.model.shutdown()
            self.queue.shutdown()
            self.settle()
            assert not self.getters
        finally:
            self.loop.close()


WorkQueueMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestWorkQueueMachine = WorkQueueMachine.TestCase

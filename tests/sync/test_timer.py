"""Tests of cronloop.sync.timer: arming, re-arming, cancel, dispatch through a serial owner.

``QueueDispatcher`` (a serial owner made of an asyncio.Queue and one consumer task, with a gate
to hold queued work) is defined here and reused by the state-machine and seed-001 tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from cronloop.sync.timer import Dispatcher, Timer, TimerStatistics


class QueueDispatcher:
    """A serial owner for tests: ``post`` is thread-safe, work runs in posting order.

    ``hold()`` stops the consumer before the next item (work keeps queueing) and ``release()``
    lets it go on: this is how tests put an event in front of an expired timer's callback.
    Errors raised by posted work are collected and re-raised when the dispatcher stops.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[Callable[..., object], tuple[object, ...]]] = (
            asyncio.Queue()
        )
        self.gate = asyncio.Event()
        self.gate.set()
        self.errors: list[BaseException] = []
        self.refuse = False
        self.pending = 0  # in the queue and not yet run (loop thread only)
        self._posted = asyncio.Event()
        self._lock = threading.Lock()
        self._unfinished = 0  # posted from any thread and not yet run
        self._idle = asyncio.Event()

    def _put(self, item: tuple[Callable[..., object], tuple[object, ...]]) -> None:
        self.pending += 1
        self.queue.put_nowait(item)
        self._posted.set()

    async def wait_pending(self, count: int) -> None:
        """Wait (bounded) until at least ``count`` items are queued and not yet run."""
        async with asyncio.timeout(5):
            while self.pending < count:
                self._posted.clear()
                await self._posted.wait()

    def post(self, fn: Callable[..., object], /, *args: object) -> object:
        if self.refuse:
            return False
        with self._lock:
            self._unfinished += 1
        if asyncio._get_running_loop() is self.loop:
            self._put((fn, args))
        else:
            self.loop.call_soon_threadsafe(self._put, (fn, args))
        return True

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    async def join(self) -> None:
        """Wait (bounded) until everything posted so far, from any thread, has run."""
        async with asyncio.timeout(5):
            while True:
                with self._lock:
                    if self._unfinished == 0:
                        return
                self._idle.clear()
                await self._idle.wait()

    async def consume(self) -> None:
        while True:
            fn, args = await self.queue.get()
            try:
                await self.gate.wait()
                fn(*args)
            except Exception as exc:
                self.errors.append(exc)
            finally:
                self.pending -= 1
                with self._lock:
                    self._unfinished -= 1
                    if self._unfinished == 0:
                        self._idle.set()


@contextlib.asynccontextmanager
async def serial_dispatcher() -> AsyncIterator[QueueDispatcher]:
    """Run a :class:`QueueDispatcher` for the duration of the block."""
    dispatcher = QueueDispatcher(asyncio.get_running_loop())
    task = asyncio.create_task(dispatcher.consume())
    try:
        yield dispatcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if dispatcher.errors:
        raise dispatcher.errors[0]


async def test_queue_dispatcher_satisfies_the_protocol() -> None:
    async with serial_dispatcher() as queue_dispatcher:
        dispatcher: Dispatcher = queue_dispatcher  # mypy checks the structural match
        ran: list[tuple[object, ...]] = []
        assert dispatcher.post(lambda *args: ran.append(args), 1, 2) is True
        await queue_dispatcher.join()
        assert ran == [(1, 2)]


class Recorder:
    """A callback that records the loop time of every call."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.times: list[float] = []
        self.fired = asyncio.Event()

    def __call__(self) -> None:
        self.times.append(self.loop.time())
        self.fired.set()


@pytest.mark.looptime
async def test_fires_once_at_the_deadline_without_a_dispatcher() -> None:
    loop = asyncio.get_running_loop()
    rec = Recorder(loop)
    timer = Timer(rec)
    start = loop.time()
    assert timer.start(10) is False
    assert timer.statistics().active
    assert timer.deadline == pytest.approx(start + 10)
    await asyncio.sleep(100)
    assert rec.times == [pytest.approx(start + 10)]
    assert not timer.active
    assert timer.deadline is None
    assert timer.statistics() == TimerStatistics(
        armed=1, fired=1, cancelled=0, stale=0, refused=0, active=False
    )


@pytest.mark.looptime
async def test_fires_through_the_dispatcher() -> None:
    loop = asyncio.get_running_loop()
    async with serial_dispatcher() as dispatcher:
        ran_in: list[str] = []

        def callback() -> None:
            ran_in.append("owner")

        timer = Timer(callback, dispatcher=dispatcher)
        timer.start_at(loop.time() + 5)
        await asyncio.sleep(6)
        await dispatcher.join()
        assert ran_in == ["owner"]
        assert timer.statistics().fired == 1


@pytest.mark.looptime
async def test_start_replaces_the_previous_arming() -> None:
    loop = asyncio.get_running_loop()
    rec = Recorder(loop)
    timer = Timer(rec)
    start = loop.time()
    timer.start(10)
    assert timer.start(20) is True
    await asyncio.sleep(100)
    assert rec.times == [pytest.approx(start + 20)]
    assert timer.statistics().armed == 2


@pytest.mark.looptime
async def test_cancel_is_idempotent_and_reports_whether_it_prevented_the_callback() -> None:
    loop = asyncio.get_running_loop()
    rec = Recorder(loop)
    timer = Timer(rec)
    assert timer.cancel() is False  # never armed
    timer.start(10)
    assert timer.cancel() is True
    assert timer.cancel() is False
    await asyncio.sleep(100)
    assert rec.times == []
    timer.start(1)
    await asyncio.sleep(2)
    assert timer.cancel() is False  # already fired
    assert len(rec.times) == 1
    assert timer.statistics().cancelled == 1


@pytest.mark.looptime
async def test_cancel_prevents_an_expired_callback_queued_on_the_owner() -> None:
    loop = asyncio.get_running_loop()
    async with serial_dispatcher() as dispatcher:
        rec = Recorder(loop)
        timer = Timer(rec, dispatcher=dispatcher)
        dispatcher.hold()
        timer.start(1)
        await asyncio.sleep(5)  # expired; its dispatch sits in the held queue
        assert dispatcher.pending == 1
        assert timer.active
        assert timer.cancel() is True
        dispatcher.release()
        await dispatcher.join()
        assert rec.times == []
        assert timer.statistics().stale == 1


@pytest.mark.looptime
async def test_rearm_from_inside_the_callback_keeps_exactly_one_live_arming() -> None:
    loop = asyncio.get_running_loop()
    async with serial_dispatcher() as dispatcher:
        times: list[float] = []
        timer: Timer

        def tick() -> None:
            times.append(loop.time())
            assert not timer.active  # claimed before the callback runs
            if len(times) < 3:
                assert timer.start(10) is False
                assert timer.active

        timer = Timer(tick, dispatcher=dispatcher)
        start = loop.time()
        timer.start(10)
        await asyncio.sleep(1000)
        await dispatcher.join()
        assert times == [pytest.approx(start + 10 * k) for k in (1, 2, 3)]
        assert not timer.active
        assert timer.statistics().fired == 3


@pytest.mark.looptime
async def test_rearm_replaces_an_expired_but_undispatched_arming() -> None:
    loop = asyncio.get_running_loop()
    async with serial_dispatcher() as dispatcher:
        rec = Recorder(loop)
        timer = Timer(rec, dispatcher=dispatcher)
        start = loop.time()
        dispatcher.hold()
        timer.start(1)
        await asyncio.sleep(2)
        assert timer.start(10) is True  # the queued expiry of the first arming is now stale
        dispatcher.release()
        await asyncio.sleep(20)
        await dispatcher.join()
        assert rec.times == [pytest.approx(start + 12)]
        assert timer.statistics().stale == 1


async def test_start_and_cancel_from_another_thread() -> None:
    loop = asyncio.get_running_loop()
    rec = Recorder(loop)
    timer = Timer(rec)
    timer.start(3600)
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.append(timer.start(0)))
    worker.start()
    worker.join(5)
    assert not worker.is_alive()
    async with asyncio.timeout(5):
        await rec.fired.wait()
    assert results == [True]
    assert len(rec.times) == 1
    assert not timer.active

    timer.start(3600)
    canceller = threading.Thread(target=lambda: results.append(timer.cancel()))
    canceller.start()
    canceller.join(5)
    assert results == [True, True]
    assert not timer.active


@pytest.mark.looptime
async def test_a_refusing_dispatcher_disarms_the_timer() -> None:
    loop = asyncio.get_running_loop()
    async with serial_dispatcher() as dispatcher:
        rec = Recorder(loop)
        timer = Timer(rec, dispatcher=dispatcher)
        dispatcher.refuse = True
        timer.start(1)
        await asyncio.sleep(2)
        assert not timer.active
        assert timer.statistics().refused == 1
        assert rec.times == []


async def test_a_timer_needs_a_loop() -> None:
    with pytest.raises(RuntimeError, match="needs an event loop"):
        await asyncio.to_thread(Timer, lambda: None)  # no loop runs in that thread


async def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="callback must be callable"):
        Timer(42)  # type: ignore[arg-type]
    timer = Timer(lambda: None, name="probe")
    with pytest.raises(ValueError, match="probe: deadline must be a number"):
        timer.start_at(float("nan"))
    with pytest.raises(ValueError, match="probe: delay must be a number"):
        timer.start(float("nan"))
    assert not timer.active
    assert "probe" in repr(timer)


async def test_cancel_after_the_loop_closed_is_harmless() -> None:
    other = asyncio.new_event_loop()
    timer = Timer(lambda: None, loop=other)
    with contextlib.suppress(RuntimeError):
        timer.start(10)  # scheduling needs the other loop; it is not running yet
    other.close()
    assert timer.cancel() is True
    assert timer.cancel() is False


class BrokenDispatcher:
    def post(self, fn: Callable[..., object], /, *args: object) -> object:
        raise RuntimeError("owner has quit")


@pytest.mark.looptime
async def test_a_raising_dispatcher_disarms_the_timer_and_reports_the_error() -> None:
    loop = asyncio.get_running_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda _, context: errors.append(context.get("exception")))
    try:
        timer = Timer(lambda: None, dispatcher=BrokenDispatcher())
        timer.start(1)
        await asyncio.sleep(2)
    finally:
        loop.set_exception_handler(None)
    assert not timer.active
    assert timer.statistics().refused == 1
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError)

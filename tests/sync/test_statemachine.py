"""Tests of cronloop.sync.statemachine: specs, transitions, timeouts, hooks, phases, and the
seed-001 three-way handshake (both ends, lost packets, timeouts racing packet events)."""

from __future__ import annotations

import asyncio
import enum
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cronloop.sync.statemachine import (
    InvalidTransition,
    MachineRecord,
    MachineSpec,
    MonotonicPhase,
    Rejected,
    StateMachine,
    StateTimeout,
    Transition,
)
from tests.sync.test_timer import QueueDispatcher, serial_dispatcher

# -- a small machine -----------------------------------------------------------------------------


class Door(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    LOCKED = "locked"


class Act(enum.StrEnum):
    OPEN = "open"
    CLOSE = "close"
    LOCK = "lock"
    UNLOCK = "unlock"
    AUTO_CLOSE = "auto_close"


def door_spec() -> MachineSpec[Door, Act]:
    return MachineSpec(
        name="door",
        states=frozenset(Door),
        initial=Door.CLOSED,
        transitions={
            (Door.CLOSED, Act.OPEN): Door.OPEN,
            (Door.OPEN, Act.CLOSE): Door.CLOSED,
            (Door.OPEN, Act.AUTO_CLOSE): Door.CLOSED,
            (Door.OPEN, Act.OPEN): Door.OPEN,
            (Door.CLOSED, Act.LOCK): Door.LOCKED,
            (Door.LOCKED, Act.UNLOCK): Door.CLOSED,
        },
        timeouts={Door.OPEN: StateTimeout(30, Act.AUTO_CLOSE)},
    )


async def test_spec_validation_names_the_problem() -> None:
    base = door_spec()
    with pytest.raises(ValueError, match="initial state 'nowhere' is not in states"):
        MachineSpec[Any, Any]("door", base.states, "nowhere", base.transitions)
    with pytest.raises(ValueError, match="unknown target state 'attic'"):
        MachineSpec[Any, Any](
            "door",
            base.states,
            Door.CLOSED,
            {(Door.CLOSED, Act.OPEN): "attic"},
        )
    with pytest.raises(
        ValueError, match=re.escape("timeout event Act.LOCK of state Door.OPEN has no transition")
    ):
        MachineSpec(
            "door",
            base.states,
            Door.CLOSED,
            base.transitions,
            {Door.OPEN: StateTimeout(1, Act.LOCK)},
        )
    with pytest.raises(
        ValueError, match=re.escape("timeout delay of state Door.OPEN must be >= 0")
    ):
        MachineSpec(
            "door",
            base.states,
            Door.CLOSED,
            base.transitions,
            {Door.OPEN: StateTimeout(-1, Act.CLOSE)},
        )
    with pytest.raises(ValueError, match="timeout for unknown state 'attic'"):
        MachineSpec[Any, Any](
            "door",
            base.states,
            Door.CLOSED,
            base.transitions,
            {"attic": StateTimeout(1, Act.CLOSE)},
        )
    assert base.allowed_events(Door.OPEN) == (Act.CLOSE, Act.AUTO_CLOSE, Act.OPEN)


async def test_invalid_transition_raises_with_state_event_and_allowed_events() -> None:
    async with serial_dispatcher() as dispatcher:
        machine = StateMachine(door_spec(), dispatcher=dispatcher)
        machine.start_now()
        with pytest.raises(InvalidTransition) as caught:
            machine.process(Act.UNLOCK)
        assert caught.value.state == Door.CLOSED
        assert caught.value.event == Act.UNLOCK
        assert caught.value.allowed == (Act.OPEN, Act.LOCK)
        assert "event Act.UNLOCK in state Door.CLOSED" in str(caught.value)
        assert "allowed events: Act.OPEN, Act.LOCK" in str(caught.value)
        assert machine.state == Door.CLOSED


async def test_invalid_transition_can_be_reported_and_ignored() -> None:
    async with serial_dispatcher() as dispatcher:
        seen: list[MachineRecord[Door, Act]] = []
        machine = StateMachine(
            door_spec(), dispatcher=dispatcher, on_invalid="ignore", observer=seen.append
        )
        machine.start()
        machine.send(Act.UNLOCK, "from the network")
        machine.send(Act.OPEN)
        machine.send(Act.LOCK, on_invalid="ignore")
        await dispatcher.join()
        assert machine.state == Door.OPEN
        rejected = [r for r in seen if isinstance(r, Rejected)]
        assert rejected == [
            Rejected(Door.CLOSED, Act.UNLOCK, "from the network", (Act.OPEN, Act.LOCK)),
            Rejected(Door.OPEN, Act.LOCK, None, (Act.CLOSE, Act.AUTO_CLOSE, Act.OPEN)),
        ]
        assert list(machine.history) == seen
        with pytest.raises(
            InvalidTransition, match=re.escape("no transition for event Act.UNLOCK")
        ):
            machine.process(Act.UNLOCK, on_invalid="raise")
        with pytest.raises(ValueError, match="on_invalid must be 'raise' or 'ignore'"):
            machine.send(Act.OPEN, on_invalid="drop")  # type: ignore[arg-type]


async def test_hooks_see_the_transition_in_order() -> None:
    async with serial_dispatcher() as dispatcher:
        calls: list[tuple[str, Door | None, Door, Door]] = []
        machine: StateMachine[Door, Act]

        def on_exit(t: Transition[Door, Act]) -> None:
            calls.append(("exit", t.source, t.target, machine.state))

        def on_enter(t: Transition[Door, Act]) -> None:
            calls.append(("enter", t.source, t.target, machine.state))

        machine = StateMachine(
            door_spec(), dispatcher=dispatcher, on_enter=on_enter, on_exit=on_exit
        )
        machine.start_now()
        record = machine.process(Act.OPEN, payload={"by": "alice"})
        assert record == Transition(Door.CLOSED, Act.OPEN, Door.OPEN, {"by": "alice"}, 2)
        assert calls == [
            ("enter", None, Door.CLOSED, Door.CLOSED),
            ("exit", Door.CLOSED, Door.OPEN, Door.CLOSED),
            ("enter", Door.CLOSED, Door.OPEN, Door.OPEN),
        ]
        assert machine.epoch == 2
        assert machine.allowed_events() == (Act.CLOSE, Act.AUTO_CLOSE, Act.OPEN)


@pytest.mark.looptime
async def test_state_timeout_is_armed_on_entry_and_cancelled_on_exit() -> None:
    loop = asyncio.get_running_loop()
    async with serial_dispatcher() as dispatcher:
        times: list[tuple[float, Transition[Door, Act]]] = []

        def observe(record: MachineRecord[Door, Act]) -> None:
            if isinstance(record, Transition):
                times.append((loop.time(), record))

        machine = StateMachine(door_spec(), dispatcher=dispatcher, observer=observe)
        start = loop.time()
        machine.start()
        machine.send(Act.OPEN)
        await asyncio.sleep(10)
        machine.send(Act.CLOSE)  # leaves OPEN before its timeout
        await asyncio.sleep(100)
        assert machine.state == Door.CLOSED
        machine.send(Act.OPEN)
        await asyncio.sleep(20)
        machine.send(Act.OPEN)  # self-transition: re-enters OPEN and re-arms 30 s from now
        await asyncio.sleep(100)
        await dispatcher.join()
        assert machine.state == Door.CLOSED
        auto = [(t, r) for t, r in times if r.timeout]
        assert len(auto) == 1
        assert auto[0][0] == pytest.approx(start + 110 + 20 + 30)
        assert auto[0][1].event == Act.AUTO_CLOSE
        assert machine.timer.statistics().fired == 1


async def test_send_from_threads_is_processed_in_posting_order_on_the_owner() -> None:
    async with serial_dispatcher() as dispatcher:
        owner = threading.get_ident()
        threads_seen: set[int] = set()
        machine = StateMachine(
            door_spec(),
            dispatcher=dispatcher,
            on_enter=lambda t: threads_seen.add(threading.get_ident()),
        )
        machine.start()

        def sender() -> None:
            for _ in range(50):
                machine.send(Act.OPEN)
                machine.send(Act.CLOSE)

        thread = threading.Thread(target=sender)
        thread.start()
        thread.join(5)
        assert not thread.is_alive()
        await dispatcher.join()
        assert machine.state == Door.CLOSED
        assert machine.epoch == 101
        assert threads_seen == {owner}


async def test_hooks_must_send_not_process() -> None:
    async with serial_dispatcher() as dispatcher:
        machine: StateMachine[Door, Act]
        errors: list[Exception] = []

        def on_enter(t: Transition[Door, Act]) -> None:
            if t.target == Door.OPEN:
                try:
                    machine.process(Act.CLOSE)
                except RuntimeError as exc:
                    errors.append(exc)
                machine.send(Act.CLOSE)

        machine = StateMachine(door_spec(), dispatcher=dispatcher, on_enter=on_enter)
        machine.start()
        machine.send(Act.OPEN)
        await dispatcher.join()
        assert machine.state == Door.CLOSED
        assert len(errors) == 1
        assert "use send() to queue the event" in str(errors[0])


@pytest.mark.looptime
async def test_close_cancels_the_timeout_and_drops_events() -> None:
    async with serial_dispatcher() as dispatcher:
        machine = StateMachine(door_spec(), dispatcher=dispatcher)
        machine.start()
        machine.send(Act.OPEN)
        await dispatcher.join()
        machine.close()
        machine.send(Act.CLOSE)
        await asyncio.sleep(100)
        await dispatcher.join()
        assert machine.closed
        assert machine.state == Door.OPEN
        assert machine.timer.statistics().fired == 0
        assert machine.process(Act.CLOSE) is None


async def test_lifecycle_errors() -> None:
    async with serial_dispatcher() as dispatcher:
        machine = StateMachine(door_spec(), dispatcher=dispatcher, history_limit=2)
        assert not machine.started
        assert machine.state == Door.CLOSED
        with pytest.raises(RuntimeError, match="before start"):
            machine.process(Act.OPEN)
        machine.start_now()
        with pytest.raises(RuntimeError, match="already started"):
            machine.start_now()
        machine.process(Act.OPEN)
        machine.process(Act.CLOSE)
        assert [r.target for r in machine.history if isinstance(r, Transition)] == [
            Door.OPEN,
            Door.CLOSED,
        ]
        with pytest.raises(ValueError, match="history_limit must be >= 0"):
            StateMachine(door_spec(), dispatcher=dispatcher, history_limit=-1)
        with pytest.raises(ValueError, match="on_invalid must be"):
            StateMachine(door_spec(), dispatcher=dispatcher, on_invalid="warn")  # type: ignore[arg-type]


# -- MonotonicPhase ------------------------------------------------------------------------------

RANKS = {"pending": 0, "preparing": 1, "prepared": 2, "running": 3, "succeeded": 4, "failed": 4}


async def test_monotonic_phase_refuses_lower_and_equal_ranks() -> None:
    phase = MonotonicPhase("pending", rank=RANKS.__getitem__)
    assert phase.advance("prepared") is True
    assert phase.advance("preparing") is False
    assert phase.advance("prepared") is False
    assert phase.advance_all(["succeeded", "prepared", "failed"]) == "succeeded"
    assert phase.rank == 4
    assert "succeeded" in repr(phase)


@given(st.lists(st.sampled_from(sorted(RANKS)), max_size=50))
async def test_phase_never_moves_backwards(reports: list[str]) -> None:
    phase = MonotonicPhase("pending", rank=RANKS.__getitem__)
    highest = 0
    for report in reports:
        before = phase.rank
        moved = phase.advance(report)
        assert phase.rank >= before
        assert moved is (RANKS[report] > before)
        highest = max(highest, RANKS[report])
        assert phase.rank == highest
    # The first report to reach the top rank wins; later equal-rank reports never replace it.
    top = [r for r in reports if RANKS[r] == highest]
    assert phase.value == (top[0] if top else "pending")


# -- the seed-001 handshake ----------------------------------------------------------------------


class Hs(enum.StrEnum):
    CLOSED = "closed"
    LISTEN = "listen"
    SYN_SENT = "syn_sent"
    SYN_RECEIVED = "syn_received"
    ESTABLISHED = "established"


class Ev(enum.StrEnum):
    CONNECT = "connect"
    LINK_DOWN = "link_down"
    SYN = "syn"
    SYN_ACK = "syn_ack"
    ACK = "ack"
    TIMEOUT = "timeout"


SYN_TIMEOUT = 3.0
SYN_ACK_TIMEOUT = 2.0
LATENCY = 0.4  # no two deadlines coincide in the scripted scenarios


def initiator_spec(syn_timeout: float = SYN_TIMEOUT) -> MachineSpec[Hs, Ev]:
    return MachineSpec(
        name="initiator",
        states=frozenset({Hs.CLOSED, Hs.SYN_SENT, Hs.ESTABLISHED}),
        initial=Hs.CLOSED,
        transitions={
            (Hs.CLOSED, Ev.CONNECT): Hs.SYN_SENT,
            (Hs.SYN_SENT, Ev.TIMEOUT): Hs.SYN_SENT,  # retransmit SYN, same session
            (Hs.SYN_SENT, Ev.SYN_ACK): Hs.ESTABLISHED,
            (Hs.ESTABLISHED, Ev.SYN_ACK): Hs.ESTABLISHED,  # our ACK was lost: send it again
            (Hs.SYN_SENT, Ev.LINK_DOWN): Hs.CLOSED,
            (Hs.ESTABLISHED, Ev.LINK_DOWN): Hs.CLOSED,
        },
        timeouts={Hs.SYN_SENT: StateTimeout(syn_timeout, Ev.TIMEOUT)},
    )


def responder_spec(syn_ack_timeout: float = SYN_ACK_TIMEOUT) -> MachineSpec[Hs, Ev]:
    return MachineSpec(
        name="responder",
        states=frozenset({Hs.LISTEN, Hs.SYN_RECEIVED, Hs.ESTABLISHED}),
        initial=Hs.LISTEN,
        transitions={
            (Hs.LISTEN, Ev.SYN): Hs.SYN_RECEIVED,
            (Hs.SYN_RECEIVED, Ev.SYN): Hs.SYN_RECEIVED,  # retransmitted or new session
            (Hs.SYN_RECEIVED, Ev.TIMEOUT): Hs.SYN_RECEIVED,  # retransmit SYN-ACK
            (Hs.SYN_RECEIVED, Ev.ACK): Hs.ESTABLISHED,
            (Hs.ESTABLISHED, Ev.SYN): Hs.SYN_RECEIVED,  # the peer restarted
        },
        timeouts={Hs.SYN_RECEIVED: StateTimeout(syn_ack_timeout, Ev.TIMEOUT)},
    )


@dataclass(frozen=True)
class Packet:
    kind: Ev
    session: int
    sender: str


class Endpoint:
    """One end of the handshake: a machine, its owner, and the session guard for packets."""

    def __init__(
        self,
        name: str,
        spec: MachineSpec[Hs, Ev],
        dispatcher: QueueDispatcher,
        network: Network,
    ) -> None:
        self.name = name
        self.dispatcher = dispatcher
        self.network = network
        self.loop = dispatcher.loop
        self.session = 0
        self.stale_packets: list[Packet] = []
        self.records: list[tuple[float, MachineRecord[Hs, Ev]]] = []
        self.established = asyncio.Event()
        self.machine = StateMachine(
            spec,
            dispatcher=dispatcher,
            on_enter=self.on_enter,
            on_invalid="ignore",
            observer=lambda r: self.records.append((self.loop.time(), r)),
        )

    def on_enter(self, t: Transition[Hs, Ev]) -> None:
        if self.name == "initiator":
            if t.target == Hs.SYN_SENT:
                if t.source == Hs.CLOSED:
                    self.session = self.network.new_session()
                self.network.send(self, Packet(Ev.SYN, self.session, self.name))
            elif t.target == Hs.ESTABLISHED:
                self.network.send(self, Packet(Ev.ACK, self.session, self.name))
                self.established.set()
        elif t.target == Hs.SYN_RECEIVED:
            if isinstance(t.payload, Packet):
                self.session = t.payload.session
            self.network.send(self, Packet(Ev.SYN_ACK, self.session, self.name))
        elif t.target == Hs.ESTABLISHED:
            self.established.set()

    def on_packet(self, packet: Packet) -> None:
        """Runs on this end's owner: the session check happens where the state lives."""
        if packet.kind != Ev.SYN and packet.session != self.session:
            self.stale_packets.append(packet)
            return
        self.machine.process(packet.kind, packet, on_invalid="ignore")

    def timeouts_acted_on_their_own_entry(self, delay: float) -> int:
        """Every timeout transition happened exactly ``delay`` after the entry it belongs to."""
        count = 0
        entered_at: float | None = None
        for at, record in self.records:
            if not isinstance(record, Transition):
                continue
            if record.timeout:
                assert entered_at is not None
                assert at == pytest.approx(entered_at + delay), f"{self.name}: stale timeout"
                count += 1
            entered_at = at
        return count


class Network:
    """Delivers packets after ``LATENCY`` through the receiver's owner; drops on request."""

    def __init__(self, drop: Callable[[Packet], bool] = lambda p: False) -> None:
        self.drop = drop
        self.sent: list[tuple[float, Packet]] = []
        self.sessions = 0
        self.peers: dict[str, Endpoint] = {}

    def new_session(self) -> int:
        self.sessions += 1
        return self.sessions * 1000

    def send(self, sender: Endpoint, packet: Packet) -> None:
        self.sent.append((sender.loop.time(), packet))
        if self.drop(packet):
            return
        peer = self.peers["responder" if sender.name == "initiator" else "initiator"]
        sender.loop.call_later(LATENCY, peer.dispatcher.post, peer.on_packet, packet)


class Handshake:
    def __init__(
        self,
        a: QueueDispatcher,
        b: QueueDispatcher,
        network: Network,
        timeouts: tuple[float, float] = (SYN_TIMEOUT, SYN_ACK_TIMEOUT),
    ) -> None:
        self.network = network
        self.initiator = Endpoint("initiator", initiator_spec(timeouts[0]), a, network)
        self.responder = Endpoint("responder", responder_spec(timeouts[1]), b, network)
        network.peers = {"initiator": self.initiator, "responder": self.responder}
        self.initiator.machine.start()
        self.responder.machine.start()

    async def connected(self) -> int:
        async with asyncio.timeout(10_000):
            await self.initiator.established.wait()
            await self.responder.established.wait()
        await asyncio.sleep(60)  # let retransmissions settle in fake time
        assert self.initiator.machine.state == Hs.ESTABLISHED
        assert self.responder.machine.state == Hs.ESTABLISHED
        assert self.initiator.session == self.responder.session
        return self.initiator.session

    def kinds(self) -> list[Ev]:
        return [p.kind for _, p in self.network.sent]


def drop_first(*kinds: Ev) -> Callable[[Packet], bool]:
    """Drop the first packet of each listed kind."""
    remaining = list(kinds)

    def drop(packet: Packet) -> bool:
        if packet.kind in remaining:
            remaining.remove(packet.kind)
            return True
        return False

    return drop


@pytest.mark.looptime
async def test_handshake_happy_path() -> None:
    async with serial_dispatcher() as a, serial_dispatcher() as b:
        hs = Handshake(a, b, Network())
        hs.initiator.machine.send(Ev.CONNECT)
        session = await hs.connected()
        assert session == 1000
        assert hs.kinds() == [Ev.SYN, Ev.SYN_ACK, Ev.ACK]
        assert hs.initiator.timeouts_acted_on_their_own_entry(SYN_TIMEOUT) == 0


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("lost", "expected"),
    [
        (Ev.SYN, [Ev.SYN, Ev.SYN, Ev.SYN_ACK, Ev.ACK]),
        (Ev.SYN_ACK, [Ev.SYN, Ev.SYN_ACK, Ev.SYN_ACK, Ev.ACK]),
        (Ev.ACK, [Ev.SYN, Ev.SYN_ACK, Ev.ACK, Ev.SYN_ACK, Ev.ACK]),
    ],
)
async def test_handshake_recovers_from_a_lost_packet(lost: Ev, expected: list[Ev]) -> None:
    async with serial_dispatcher() as a, serial_dispatcher() as b:
        hs = Handshake(a, b, Network(drop_first(lost)))
        hs.initiator.machine.send(Ev.CONNECT)
        await hs.connected()
        # SYN_ACK lost: the responder's 2 s retransmit beats the initiator's 3 s one.
        assert hs.kinds() == expected
        hs.initiator.timeouts_acted_on_their_own_entry(SYN_TIMEOUT)
        hs.responder.timeouts_acted_on_their_own_entry(SYN_ACK_TIMEOUT)


@pytest.mark.looptime
async def test_syn_ack_queued_ahead_of_an_expired_timeout_wins() -> None:
    """The SYN-ACK and the SYN timeout are both due; the packet is first in the owner's queue."""
    async with serial_dispatcher() as a, serial_dispatcher() as b:
        # A patient responder, so that only one SYN-ACK is in flight.
        hs = Handshake(a, b, Network(), timeouts=(SYN_TIMEOUT, 10 * SYN_TIMEOUT))
        hs.initiator.machine.send(Ev.CONNECT)
        await a.join()
        a.hold()
        # The real SYN-ACK arrives at 0.8 and waits in the held queue; then the timeout expires.
        await asyncio.sleep(SYN_TIMEOUT + 0.5)
        assert a.pending == 2
        a.release()
        await hs.connected()
        assert hs.kinds() == [Ev.SYN, Ev.SYN_ACK, Ev.ACK]  # no retransmission: timeout dropped
        assert hs.initiator.machine.timer.statistics().stale == 1
        assert hs.initiator.timeouts_acted_on_their_own_entry(SYN_TIMEOUT) == 0


@pytest.mark.looptime
async def test_stale_timeout_never_acts_on_a_newer_session() -> None:
    """Link drops and reconnects while the old session's expired timeout is queued."""
    loop = asyncio.get_running_loop()
    async with serial_dispatcher() as a, serial_dispatcher() as b:
        hs = Handshake(a, b, Network(drop=lambda p: p.kind == Ev.SYN and p.session == 1000))
        hs.initiator.machine.send(Ev.CONNECT)
        await a.join()
        a.hold()
        hs.initiator.machine.send(Ev.LINK_DOWN)
        hs.initiator.machine.send(Ev.CONNECT)
        await asyncio.sleep(SYN_TIMEOUT + 0.1)  # session 1000's timeout expires behind them
        assert a.pending == 3
        reconnect_at = loop.time()
        a.release()
        await hs.connected()
        assert hs.initiator.session == 2000
        syns = [(at, p.session) for at, p in hs.network.sent if p.kind == Ev.SYN]
        assert syns == [
            (pytest.approx(reconnect_at - SYN_TIMEOUT - 0.1), 1000),
            (reconnect_at, 2000),
        ]
        assert hs.initiator.machine.timer.statistics().stale == 1
        assert hs.initiator.timeouts_acted_on_their_own_entry(SYN_TIMEOUT) == 0


@pytest.mark.looptime
async def test_late_syn_ack_of_an_old_session_is_ignored() -> None:
    async with serial_dispatcher() as a, serial_dispatcher() as b:
        hs = Handshake(a, b, Network())
        hs.initiator.machine.send(Ev.CONNECT)
        await hs.connected()
        hs.initiator.dispatcher.post(hs.initiator.on_packet, Packet(Ev.SYN_ACK, 999, "ghost"))
        await a.join()
        assert hs.initiator.stale_packets == [Packet(Ev.SYN_ACK, 999, "ghost")]
        assert hs.initiator.machine.state == Hs.ESTABLISHED


@pytest.mark.looptime
@pytest.mark.parametrize("seed", range(25))
async def test_handshake_over_a_lossy_network(seed: int) -> None:
    rng = random.Random(seed)
    async with serial_dispatcher() as a, serial_dispatcher() as b:
        hs = Handshake(a, b, Network(drop=lambda p: rng.random() < 0.4))
        hs.initiator.machine.send(Ev.CONNECT)
        if rng.random() < 0.5:  # a restart halfway through the first attempt
            await asyncio.sleep(rng.uniform(0, 2 * SYN_TIMEOUT))
            hs.initiator.machine.send(Ev.LINK_DOWN)
            hs.initiator.machine.send(Ev.CONNECT)
        session = await hs.connected()
        assert session == hs.network.sessions * 1000  # the newest session, never an old one
        hs.initiator.timeouts_acted_on_their_own_entry(SYN_TIMEOUT)
        hs.responder.timeouts_acted_on_their_own_entry(SYN_ACK_TIMEOUT)
        for stale in hs.responder.stale_packets:
            assert stale.session != session or stale.kind != Ev.ACK


async def test_handshake_with_packets_from_a_network_thread() -> None:
    """Real concurrency: packets arrive from another thread while timeouts fire on the loop."""
    loop = asyncio.get_running_loop()
    async with serial_dispatcher() as a, serial_dispatcher() as b:
        rng = random.Random(7)
        wire: list[tuple[Endpoint, Packet]] = []
        wire_ready = threading.Condition()
        stop = threading.Event()

        class ThreadNetwork(Network):
            def send(self, sender: Endpoint, packet: Packet) -> None:
                self.sent.append((loop.time(), packet))
                peer = self.peers["responder" if sender.name == "initiator" else "initiator"]
                with wire_ready:
                    wire.append((peer, packet))
                    wire_ready.notify()

        def deliver() -> None:
            while not stop.is_set():
                with wire_ready:
                    wire_ready.wait_for(lambda: wire or stop.is_set(), timeout=5)
                    batch = list(wire)
                    wire.clear()
                for peer, packet in batch:
                    if rng.random() >= 0.3:
                        peer.dispatcher.post(peer.on_packet, packet)

        network = ThreadNetwork()
        thread = threading.Thread(target=deliver)
        thread.start()
        try:
            # Short real-time timeouts, so that they race the thread's deliveries.
            hs = Handshake(a, b, network, timeouts=(0.02, 0.015))
            hs.initiator.machine.send(Ev.CONNECT)
            async with asyncio.timeout(30):
                await hs.initiator.established.wait()
                await hs.responder.established.wait()
        finally:
            stop.set()
            with wire_ready:
                wire_ready.notify()
            thread.join(5)
        assert not thread.is_alive()
        await a.join()
        await b.join()
        assert hs.initiator.session == hs.responder.session == 1000


@pytest.mark.looptime
async def test_a_failing_exit_hook_keeps_the_state_and_its_timeout() -> None:
    async with serial_dispatcher() as dispatcher:

        def on_exit(t: Transition[Door, Act]) -> None:
            if t.event == Act.CLOSE:
                raise OSError("actuator jammed")

        machine = StateMachine(door_spec(), dispatcher=dispatcher, on_exit=on_exit)
        machine.start_now()
        machine.process(Act.OPEN)
        with pytest.raises(OSError, match="actuator jammed"):
            machine.process(Act.CLOSE)
        assert machine.allowed_events() == (Act.CLOSE, Act.AUTO_CLOSE, Act.OPEN)  # still OPEN
        assert machine.timer.active
        await asyncio.sleep(31)
        await dispatcher.join()
        assert machine.state == Door.CLOSED  # the auto-close timeout still acted
        assert [r.event for r in machine.history if isinstance(r, Transition)][-1] == Act.AUTO_CLOSE

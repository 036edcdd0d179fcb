"""Declarative state machines owned by a serial loop, and a phase whose rank only rises.

This module holds :class:`MachineSpec` (states, transitions ``(state, event) -> state``,
per-state :class:`StateTimeout`), :class:`StateMachine` (runs a spec on an owner's
:class:`~cronloop.sync.timer.Dispatcher`), the records it keeps (:class:`Transition`,
:class:`Rejected`), :class:`InvalidTransition`, and :class:`MonotonicPhase`.

Why hand-written: Python state-machine libraries (``transitions``, ``python-statemachine``)
run callbacks on whichever thread calls them, and ``transitions``' timeout states fire from a
``threading.Timer`` thread, which is seed 001's race itself. None routes events and timeouts
through one serial owner, which is the whole point here. Every event and
every timeout runs on the owner's loop, one at a time, and a state's timeout is a
:class:`~cronloop.sync.timer.Timer` cancelled on exit, whose cancel is final, so a stale
timeout can never act on a newer state entry.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeAlias, TypeVar

from cronloop.sync.timer import Dispatcher, Timer

__all__ = [
    "InvalidTransition",
    "MachineRecord",
    "MachineSpec",
    "MonotonicPhase",
    "OnInvalid",
    "Rejected",
    "StateMachine",
    "StateTimeout",
    "Transition",
]

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=Hashable)
E = TypeVar("E", bound=Hashable)
T = TypeVar("T")

OnInvalid: TypeAlias = Literal["raise", "ignore"]
"""What an event with no transition from the current state does: raise
:class:`InvalidTransition` (a programming error), or be recorded as :class:`Rejected`, logged
and dropped (an event from the network that arrived late or twice)."""


def _show(value: object) -> str:
    """How states and events appear in messages: ``Door.OPEN`` for enum members, else repr."""
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    return repr(value)


class InvalidTransition(Exception):
    """Raised by :meth:`StateMachine.process` when ``event`` has no transition from ``state``."""

    def __init__(self, machine: str, state: object, event: object, allowed: tuple[object, ...]):
        self.machine = machine
        self.state = state
        self.event = event
        self.allowed = allowed
        allowed_text = ", ".join(_show(a) for a in allowed) or "none (a final state)"
        super().__init__(
            f"{machine}: no transition for event {_show(event)} in state {_show(state)}; "
            f"allowed events: {allowed_text}"
        )


@dataclass(frozen=True)
class StateTimeout(Generic[E]):
    """A state's timeout: ``event`` is raised ``delay`` seconds after the state was entered."""

    delay: float
    event: E


@dataclass(frozen=True)
class MachineSpec(Generic[S, E]):
    """The declarative part of a machine, validated on construction.

    ``transitions`` maps ``(state, event)`` to the next state; a transition to the same state
    exits and re-enters it (hooks run, the timeout is re-armed). ``timeouts`` maps a state to
    the event raised when it has been occupied for ``delay`` seconds; that event must have a
    transition from the state.
    """

    name: str
    states: frozenset[S]
    initial: S
    transitions: Mapping[tuple[S, E], S]
    timeouts: Mapping[S, StateTimeout[E]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.initial not in self.states:
            raise ValueError(f"{self.name}: initial state {_show(self.initial)} is not in states")
        for (source, event), target in self.transitions.items():
            for role, state in (("source", source), ("target", target)):
                if state not in self.states:
                    raise ValueError(
                        f"{self.name}: transition ({_show(source)}, {_show(event)}) -> "
                        f"{_show(target)} has unknown {role} state {_show(state)}"
                    )
        for state, timeout in self.timeouts.items():
            if state not in self.states:
                raise ValueError(f"{self.name}: timeout for unknown state {_show(state)}")
            if not timeout.delay >= 0:
                raise ValueError(
                    f"{self.name}: timeout delay of state {_show(state)} must be >= 0, "
                    f"got {timeout.delay!r}"
                )
            if (state, timeout.event) not in self.transitions:
                raise ValueError(
                    f"{self.name}: timeout event {_show(timeout.event)} of state {_show(state)} "
                    "has no transition from that state"
                )

    def allowed_events(self, state: S) -> tuple[E, ...]:
        """The events that have a transition from ``state``, in declaration order."""
        return tuple(e for (s, e) in self.transitions if s == state)


@dataclass(frozen=True)
class Transition(Generic[S, E]):
    """One transition taken. ``epoch`` counts state entries (the initial entry is 1);
    ``timeout`` is True when the event was the source state's timeout."""

    source: S | None
    event: E | None
    target: S
    payload: object
    epoch: int
    timeout: bool = False


@dataclass(frozen=True)
class Rejected(Generic[S, E]):
    """An event that had no transition from ``state`` and was ignored."""

    state: S
    event: E
    payload: object
    allowed: tuple[E, ...]


MachineRecord: TypeAlias = Transition[S, E] | Rejected[S, E]
"""What a machine records for each event: the transition taken, or the rejection."""

Hook: TypeAlias = Callable[[Transition[S, E]], object]


class StateMachine(Generic[S, E]):
    """Runs a :class:`MachineSpec` on a serial owner.

    ``send``/``start``/``close`` are thread-safe: they post to ``dispatcher``. ``process`` is
    the owner-side step (call it only on the owner's loop, e.g. from code already posted
    there). On entering a state with a timeout a :class:`Timer` is armed through the same
    dispatcher; leaving the state cancels it, and since a cancel on the owner is final, a
    timeout that expired while an earlier event was queued never acts on the new state.

    ``on_exit(t)`` runs before the state changes and ``on_enter(t)`` after; both receive the
    :class:`Transition`. Hooks must not call :meth:`process` (they would re-enter the machine);
    they may call :meth:`send`, which queues the event behind the current one. An exception
    from ``on_exit`` leaves the state unchanged; one from ``on_enter`` propagates after the
    state has changed (through ``process``, or to the owner for posted events). ``observer``
    sees every :class:`Transition` and :class:`Rejected` record, the last ``history_limit`` of
    which are kept in :attr:`history`. ``loop`` is the asyncio loop whose clock drives the
    timeouts (default: the running loop).
    """

    def __init__(
        self,
        spec: MachineSpec[S, E],
        *,
        dispatcher: Dispatcher,
        on_enter: Hook[S, E] | None = None,
        on_exit: Hook[S, E] | None = None,
        on_invalid: OnInvalid = "raise",
        observer: Callable[[MachineRecord[S, E]], object] | None = None,
        history_limit: int = 1000,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        _check_policy(on_invalid)
        if history_limit < 0:
            raise ValueError(f"history_limit must be >= 0, got {history_limit!r}")
        self.spec = spec
        self._dispatcher = dispatcher
        self._on_enter = on_enter
        self._on_exit = on_exit
        self._on_invalid: OnInvalid = on_invalid
        self._observer = observer
        self._history: deque[MachineRecord[S, E]] = deque(maxlen=history_limit)
        self._state: S | None = None
        self._epoch = 0
        self._busy = False
        self._closed = False
        self._timer = Timer(
            self._timed_out, dispatcher=dispatcher, loop=loop, name=f"{spec.name} timeout"
        )

    def __repr__(self) -> str:
        return f"<StateMachine {self.spec.name} state={self._state!r} epoch={self._epoch}>"

    @property
    def state(self) -> S:
        """The current state; the spec's initial state until :meth:`start` has run."""
        return self.spec.initial if self._state is None else self._state

    @property
    def started(self) -> bool:
        """True once the initial state has been entered."""
        return self._state is not None

    @property
    def epoch(self) -> int:
        """How many times a state has been entered (0 before :meth:`start`)."""
        return self._epoch

    @property
    def closed(self) -> bool:
        """True after :meth:`close`: the timeout is cancelled and events are dropped."""
        return self._closed

    @property
    def history(self) -> tuple[MachineRecord[S, E], ...]:
        """The most recent records, oldest first."""
        return tuple(self._history)

    @property
    def timer(self) -> Timer:
        """The timer behind state timeouts (for its statistics)."""
        return self._timer

    def allowed_events(self) -> tuple[E, ...]:
        """The events that have a transition from the current state."""
        return self.spec.allowed_events(self.state)

    # -- thread-safe ------------------------------------------------------------------------

    def start(self) -> None:
        """Enter the initial state on the owner's loop (thread-safe; posts)."""
        self._dispatcher.post(self.start_now)

    def send(
        self, event: E, payload: object = None, *, on_invalid: OnInvalid | None = None
    ) -> None:
        """Feed ``event`` to the machine on the owner's loop (thread-safe; posts).

        ``on_invalid`` overrides the machine's policy for this event: pass ``"ignore"`` for
        events from the network, where a late or duplicated packet is expected.
        """
        if on_invalid is not None:
            _check_policy(on_invalid)
        self._dispatcher.post(self._process_posted, event, payload, on_invalid)

    def close(self) -> None:
        """Stop the machine: cancel its timeout, drop every later event (thread-safe).

        The timeout is cancelled at once and again on the owner's loop, in case an event being
        processed right now re-armed it.
        """
        self._closed = True
        self._timer.cancel()
        self._dispatcher.post(self._timer.cancel)

    # -- owner's loop -----------------------------------------------------------------------

    def start_now(self) -> Transition[S, E]:
        """Enter the initial state now (owner only). Raises if already started."""
        if self._state is not None:
            raise RuntimeError(f"{self.spec.name}: already started (state {_show(self._state)})")
        self._check_reentry()
        record: Transition[S, E] = Transition(None, None, self.spec.initial, None, 1)
        self._busy = True
        try:
            self._enter(record)
        finally:
            self._busy = False
        return record

    def process(
        self, event: E, payload: object = None, *, on_invalid: OnInvalid | None = None
    ) -> MachineRecord[S, E] | None:
        """Apply ``event`` now (owner only) and return the record, or None if closed.

        Raises :class:`InvalidTransition` when the event has no transition from the current
        state and the policy is ``"raise"``.
        """
        if on_invalid is not None:
            _check_policy(on_invalid)
        return self._apply(event, payload, on_invalid, timeout=False)

    def _process_posted(self, event: E, payload: object, on_invalid: OnInvalid | None) -> None:
        self._apply(event, payload, on_invalid, timeout=False)

    def _timed_out(self) -> None:
        timeout = self.spec.timeouts[self.state]
        self._apply(timeout.event, None, "raise", timeout=True)

    def _apply(
        self, event: E, payload: object, on_invalid: OnInvalid | None, *, timeout: bool
    ) -> MachineRecord[S, E] | None:
        if self._closed:
            return None
        if self._state is None:
            raise RuntimeError(f"{self.spec.name}: event {_show(event)} before start()")
        self._check_reentry()
        source = self._state
        target = self.spec.transitions.get((source, event))
        if target is None:
            return self._reject(source, event, payload, on_invalid or self._on_invalid)
        record = Transition(source, event, target, payload, self._epoch + 1, timeout)
        self._busy = True
        try:
            if self._on_exit is not None:
                self._on_exit(record)
            # After on_exit, so that a failing hook leaves the state with its timeout armed.
            # The timer cannot fire in between: its expiry would queue behind us on the owner.
            if not timeout:
                self._timer.cancel()
            self._enter(record)
        finally:
            self._busy = False
        return record

    def _enter(self, record: Transition[S, E]) -> None:
        self._state = record.target
        self._epoch = record.epoch
        self._remember(record)
        timeout = self.spec.timeouts.get(record.target)
        if timeout is not None and not self._closed:
            self._timer.start(timeout.delay)
        if self._on_enter is not None:
            self._on_enter(record)

    def _reject(self, state: S, event: E, payload: object, policy: OnInvalid) -> Rejected[S, E]:
        allowed = self.spec.allowed_events(state)
        if policy == "raise":
            raise InvalidTransition(self.spec.name, state, event, allowed)
        record = Rejected(state, event, payload, allowed)
        logger.info(
            "%s: ignored event %r in state %r (allowed: %r)", self.spec.name, event, state, allowed
        )
        self._remember(record)
        return record

    def _remember(self, record: MachineRecord[S, E]) -> None:
        self._history.append(record)
        if self._observer is not None:
            self._observer(record)

    def _check_reentry(self) -> None:
        if self._busy:
            raise RuntimeError(
                f"{self.spec.name}: process() called from a hook; use send() to queue the event"
            )


def _check_policy(on_invalid: str) -> None:
    if on_invalid not in ("raise", "ignore"):
        raise ValueError(f"on_invalid must be 'raise' or 'ignore', got {on_invalid!r}")


class MonotonicPhase(Generic[T]):
    """A value whose rank only rises: ``advance`` refuses anything not ranked strictly higher.

    Equal ranks are refused too, so two terminal phases of the same rank (``Succeeded`` and
    ``Failed``) never overwrite each other. Not thread-safe: keep it on its owner's loop.
    """

    __slots__ = ("_rank", "_rank_of", "_value")

    def __init__(self, initial: T, *, rank: Callable[[T], float]) -> None:
        self._rank_of = rank
        self._value = initial
        self._rank = rank(initial)

    def __repr__(self) -> str:
        return f"<MonotonicPhase {self._value!r} rank={self._rank!r}>"

    @property
    def value(self) -> T:
        """The current phase."""
        return self._value

    @property
    def rank(self) -> float:
        """The rank of the current phase."""
        return self._rank

    def advance(self, new: T) -> bool:
        """Move to ``new`` if it ranks strictly higher; return whether it moved."""
        new_rank = self._rank_of(new)
        if new_rank > self._rank:
            self._value = new
            self._rank = new_rank
            return True
        return False

    def advance_all(self, values: Iterable[T]) -> T:
        """Offer every value in order (as out-of-order reports would arrive); return the result."""
        for value in values:
            self.advance(value)
        return self._value

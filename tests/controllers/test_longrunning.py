"""Long-running detection: thresholds from expectations and history, warn-once, deadlines.

Time is the plain float passed to ``started`` and ``check``; a hypothesis state machine drives
random starts, finishes and clock jumps against a brute-force model of the deadlines.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cronloop.controllers.longrunning import (
    DurationHistory,
    LongRunningDetector,
    LongRunningStatistics,
    LongRunningWarning,
    Threshold,
)


def seeded(detector: LongRunningDetector, cronjob: str, durations: list[float]) -> None:
    for duration in durations:
        detector.history(cronjob).record(duration)


# --- DurationHistory ---------------------------------------------------------------------


def test_expected_wins_over_history() -> None:
    history = DurationHistory([1.0] * 20)
    assert history.threshold(90.0) == Threshold(90.0, "expectedDurationSeconds")
    # Even below the floor: an explicit expectation is taken as given.
    assert history.threshold(2.5, floor=10.0) == Threshold(2.5, "expectedDurationSeconds")


def test_history_threshold_is_multiple_of_median() -> None:
    history = DurationHistory([20.0, 30.0, 40.0, 25.0, 35.0, 1000.0])
    assert history.threshold(None) == Threshold(3.0 * 32.5, "3 x median of last 6 runs")
    assert history.threshold(None, multiple=1.5) == Threshold(
        1.5 * 32.5, "1.5 x median of last 6 runs"
    )


def test_history_needs_min_samples() -> None:
    history = DurationHistory([30.0] * 4)
    assert history.threshold(None) is None
    assert history.threshold(None, min_samples=4) == Threshold(90.0, "3 x median of last 4 runs")
    history.record(30.0)
    assert history.threshold(None) == Threshold(90.0, "3 x median of last 5 runs")


def test_history_threshold_respects_floor() -> None:
    history = DurationHistory([1.0] * 5)
    assert history.threshold(None) == Threshold(
        10.0, "3 x median of last 5 runs, raised to the 10s floor"
    )
    assert history.threshold(None, floor=0.0) == Threshold(3.0, "3 x median of last 5 runs")


def test_history_window_is_bounded_and_rolls() -> None:
    history = DurationHistory(size=3)
    for duration in (1.0, 2.0, 3.0, 4.0, 5.0):
        history.record(duration)
    assert history.size == 3
    assert len(history) == 3
    assert history.durations() == (3.0, 4.0, 5.0)
    assert history.threshold(None, min_samples=3, floor=0.0) == Threshold(
        12.0, "3 x median of last 3 runs"
    )


@pytest.mark.parametrize("size", [0, -1, True, 2.5])
def test_history_rejects_bad_size(size: object) -> None:
    with pytest.raises(ValueError, match="size"):
        DurationHistory(size=size)  # type: ignore[arg-type]


@pytest.mark.parametrize("duration", [-1.0, math.nan, math.inf])
def test_history_rejects_bad_duration(duration: float) -> None:
    with pytest.raises(ValueError, match="duration"):
        DurationHistory().record(duration)


@pytest.mark.parametrize(
    ("expected", "multiple", "min_samples", "floor", "name"),
    [
        (0.0, 3.0, 5, 10.0, "expected"),
        (-5.0, 3.0, 5, 10.0, "expected"),
        (math.nan, 3.0, 5, 10.0, "expected"),
        (None, 0.0, 5, 10.0, "multiple"),
        (None, math.inf, 5, 10.0, "multiple"),
        (None, 3.0, 0, 10.0, "min_samples"),
        (None, 3.0, 5, -1.0, "floor"),
    ],
)
def test_threshold_rejects_bad_arguments(
    expected: float | None, multiple: float, min_samples: int, floor: float, name: str
) -> None:
    history = DurationHistory([1.0] * 10)
    with pytest.raises(ValueError, match=name):
        history.threshold(expected, multiple=multiple, min_samples=min_samples, floor=floor)


# --- LongRunningDetector -----------------------------------------------------------------


def test_warning_message_names_run_elapsed_and_basis() -> None:
    detector = LongRunningDetector()
    seeded(detector, "nightly", [30.0] * 20)
    threshold = detector.started("nightly-1700000000", cronjob="nightly", started_at=1000.0)
    assert threshold == Threshold(90.0, "3 x median of last 20 runs")

    [warning] = detector.check(1312.0)
    assert warning == LongRunningWarning(
        run_id="nightly-1700000000",
        cronjob="nightly",
        started_at=1000.0,
        at=1312.0,
        threshold=Threshold(90.0, "3 x median of last 20 runs"),
    )
    assert warning.elapsed == 312.0
    assert warning.message == (
        'run "nightly-1700000000" has been running 312s, '
        "expected at most 90s (3 x median of last 20 runs)"
    )


def _expected_duration_message(expected: float, now: float) -> str:
    """The warning for run "r", started at 0 with ``expectedDurationSeconds: expected``, at
    ``now``."""
    detector = LongRunningDetector()
    detector.started("r", cronjob="c", started_at=0.0, expected=expected)
    [warning] = detector.check(now)
    return warning.message


def test_message_for_expected_duration() -> None:
    assert _expected_duration_message(2.5, 3.75) == (
        'run "r" has been running 3.8s, expected at most 2.5s (expectedDurationSeconds)'
    )


@pytest.mark.parametrize(
    ("expected", "now", "running", "limit"),
    [
        # The audit's case: warned just past a 2 s limit, shown as "running 2s".
        (2.0, 2.04, "2.04s", "2s"),
        (2.0, 2.4, "2.4s", "2s"),
        (2.0, 2.0004, "2.001s", "2s"),
        (100.0, 100.2, "100.2s", "100s"),
        (97.6, 97.65, "97.7s", "97.6s"),
        (0.5, 0.513, "0.51s", "0.5s"),
        (2.55, 5.0, "5s", "2.5s"),
    ],
)
def test_message_shows_the_running_time_above_the_limit(
    expected: float, now: float, running: str, limit: str
) -> None:
    assert _expected_duration_message(expected, now) == (
        f'run "r" has been running {running}, expected at most {limit} (expectedDurationSeconds)'
    )


def _seconds_shown(message: str, before: str, after: str) -> float:
    return float(message.split(before, 1)[1].split(after, 1)[0].removesuffix("s"))


@given(
    expected=st.floats(min_value=0.01, max_value=100_000),
    over=st.floats(min_value=0.001, max_value=100_000),
)
def test_running_time_always_reads_larger_than_the_limit(expected: float, over: float) -> None:
    message = _expected_duration_message(expected, expected + over)
    running = _seconds_shown(message, "running ", ",")
    limit = _seconds_shown(message, "at most ", " (")
    assert running > limit, message


def test_warns_once_at_or_after_threshold() -> None:
    detector = LongRunningDetector()
    detector.started("r", cronjob="c", started_at=100.0, expected=60.0)
    assert detector.check(159.999) == []
    assert [w.run_id for w in detector.check(160.0)] == ["r"]
    assert detector.check(160.0) == []
    assert detector.check(10_000.0) == []
    assert detector.statistics() == LongRunningStatistics(tracked=1, watched=1, warned=1)


def test_next_deadline_tracks_earliest_unwarned_run() -> None:
    detector = LongRunningDetector()
    assert detector.next_deadline() is None
    detector.started("a", cronjob="c", started_at=0.0, expected=50.0)
    detector.started("b", cronjob="c", started_at=10.0, expected=20.0)
    detector.started("c", cronjob="c", started_at=5.0, expected=100.0)
    assert detector.next_deadline() == 30.0

    assert [w.run_id for w in detector.check(30.0)] == ["b"]
    assert detector.next_deadline() == 50.0

    assert detector.finished("a", 45.0, success=True)
    assert detector.next_deadline() == 105.0

    # A timer armed for exactly the deadline finds the run at that instant.
    deadline = detector.next_deadline()
    assert deadline is not None
    assert [w.run_id for w in detector.check(deadline)] == ["c"]
    assert detector.next_deadline() is None


def test_check_reports_in_deadline_order() -> None:
    detector = LongRunningDetector()
    detector.started("late", cronjob="c", started_at=0.0, expected=30.0)
    detector.started("early", cronjob="c", started_at=0.0, expected=10.0)
    detector.started("middle", cronjob="c", started_at=5.0, expected=15.0)
    assert [w.run_id for w in detector.check(100.0)] == ["early", "middle", "late"]


def test_run_without_threshold_is_tracked_but_never_warned() -> None:
    detector = LongRunningDetector()
    assert detector.started("r1", cronjob="c", started_at=0.0) is None
    assert detector.next_deadline() is None
    assert detector.check(1e9) == []
    assert detector.statistics() == LongRunningStatistics(tracked=1, watched=0, warned=0)
    assert detector.finished("r1", 12.0, success=True)
    assert detector.history("c").durations() == (12.0,)
    assert detector.statistics() == LongRunningStatistics(tracked=0, watched=0, warned=0)


def test_finished_feeds_history_only_on_success() -> None:
    detector = LongRunningDetector(min_samples=2)
    for i, (duration, success) in enumerate([(40.0, True), (500.0, False), (60.0, True)]):
        detector.started(f"r{i}", cronjob="c", started_at=float(i))
        assert detector.finished(f"r{i}", duration, success=success)
    assert detector.history("c").durations() == (40.0, 60.0)
    assert detector.started("next", cronjob="c", started_at=10.0) == Threshold(
        150.0, "3 x median of last 2 runs"
    )


def test_finished_before_deadline_means_no_warning() -> None:
    detector = LongRunningDetector()
    detector.started("r", cronjob="c", started_at=0.0, expected=10.0)
    assert detector.finished("r", 9.0, success=True)
    assert detector.check(100.0) == []
    assert detector.next_deadline() is None


def test_finished_is_idempotent_and_unknown_runs_are_ignored() -> None:
    detector = LongRunningDetector()
    assert not detector.finished("ghost", 5.0, success=True)
    assert detector.history("c").durations() == ()
    detector.started("r", cronjob="c", started_at=0.0)
    assert detector.finished("r", 5.0, success=True)
    assert not detector.finished("r", 5.0, success=True)
    assert detector.history("c").durations() == (5.0,)


def test_finished_rejects_bad_duration() -> None:
    detector = LongRunningDetector()
    detector.started("r", cronjob="c", started_at=0.0)
    with pytest.raises(ValueError, match="duration"):
        detector.finished("r", -1.0, success=True)
    assert detector.statistics().tracked == 1


def test_started_is_idempotent() -> None:
    detector = LongRunningDetector()
    first = detector.started("r", cronjob="c", started_at=0.0, expected=10.0)
    again = detector.started("r", cronjob="c", started_at=50.0, expected=99.0)
    assert first == again == Threshold(10.0, "expectedDurationSeconds")
    assert detector.next_deadline() == 10.0
    assert len(detector.check(10.0)) == 1
    # Re-registering a warned run must not re-arm it.
    detector.started("r", cronjob="c", started_at=0.0, expected=10.0)
    assert detector.check(20.0) == []


def test_already_warned_run_is_not_warned_again() -> None:
    detector = LongRunningDetector()
    detector.started("r", cronjob="c", started_at=0.0, expected=10.0, warned=True)
    assert detector.next_deadline() is None
    assert detector.check(100.0) == []
    assert detector.statistics() == LongRunningStatistics(tracked=1, watched=1, warned=0)


def test_run_id_reused_after_finish_gets_fresh_deadline() -> None:
    detector = LongRunningDetector()
    detector.started("r", cronjob="c", started_at=0.0, expected=10.0)
    detector.finished("r", 5.0, success=False)
    detector.started("r", cronjob="c", started_at=100.0, expected=10.0)
    # The first run's deadline (10) is still in the heap; it must not fire for the new run.
    assert detector.check(50.0) == []
    assert detector.next_deadline() == 110.0
    [warning] = detector.check(110.0)
    assert warning.started_at == 100.0


def test_threshold_is_fixed_at_start() -> None:
    detector = LongRunningDetector(min_samples=1, floor=0.0)
    seeded(detector, "c", [10.0])
    detector.started("r", cronjob="c", started_at=0.0)
    seeded(detector, "c", [1000.0, 1000.0])
    assert detector.next_deadline() == 30.0


def test_forget_cronjob_drops_history() -> None:
    detector = LongRunningDetector(min_samples=1)
    seeded(detector, "c", [100.0])
    detector.forget_cronjob("c")
    detector.forget_cronjob("never-seen")
    assert detector.started("r", cronjob="c", started_at=0.0) is None


def test_rejects_bad_options_and_start_time() -> None:
    with pytest.raises(ValueError, match="size"):
        LongRunningDetector(history_size=0)
    with pytest.raises(ValueError, match="multiple"):
        LongRunningDetector(multiple=-1.0)
    with pytest.raises(ValueError, match="min_samples"):
        LongRunningDetector(min_samples=0)
    with pytest.raises(ValueError, match="floor"):
        LongRunningDetector(floor=math.nan)
    detector = LongRunningDetector()
    with pytest.raises(ValueError, match="started_at"):
        detector.started("r", cronjob="c", started_at=math.nan)
    with pytest.raises(ValueError, match="expected"):
        detector.started("r", cronjob="c", started_at=0.0, expected=0.0)
    assert detector.statistics().tracked == 0


def test_heap_stays_proportional_to_runs_in_flight() -> None:
    detector = LongRunningDetector()
    for i in range(10_000):
        detector.started(f"r{i}", cronjob="c", started_at=float(i), expected=1e6)
        if i >= 10:
            detector.finished(f"r{i - 10}", 1.0, success=True)
    assert detector.statistics().tracked == 10
    assert len(detector._heap) <= 2 * 10 + 64 + 1
    assert detector.next_deadline() == 9990.0 + 1e6


# --- property: warned at most once, only after the threshold, never missed --------------


class DetectorMachine(RuleBasedStateMachine):
    """Random starts, finishes and clock jumps against a model of the deadlines."""

    def __init__(self) -> None:
        super().__init__()
        self.detector = LongRunningDetector(min_samples=2, floor=0.5)
        self.now = 0.0
        self.next_id = 0
        self.deadlines: dict[str, float | None] = {}
        self.warned: set[str] = set()
        self.warned_ever: list[str] = []

    @rule(
        cronjob=st.sampled_from(["a", "b"]),
        expected=st.none() | st.floats(min_value=0.01, max_value=100.0),
        ago=st.floats(min_value=0.0, max_value=50.0),
    )
    def start(self, cronjob: str, expected: float | None, ago: float) -> None:
        run_id = f"run-{self.next_id}"
        self.next_id += 1
        started_at = self.now - ago  # a run re-registered after a restart started earlier
        threshold = self.detector.started(
            run_id, cronjob=cronjob, started_at=started_at, expected=expected
        )
        if expected is not None:
            assert threshold is not None
            assert threshold.seconds == expected
        self.deadlines[run_id] = None if threshold is None else started_at + threshold.seconds

    @precondition(lambda self: bool(self.deadlines))
    @rule(data=st.data(), duration=st.floats(min_value=0.0, max_value=100.0), ok=st.booleans())
    def finish(self, data: st.DataObject, duration: float, ok: bool) -> None:
        run_id = data.draw(st.sampled_from(sorted(self.deadlines)))
        assert self.detector.finished(run_id, duration, success=ok)
        del self.deadlines[run_id]
        self.warned.discard(run_id)

    @rule(step=st.floats(min_value=0.0, max_value=60.0))
    def advance_and_check(self, step: float) -> None:
        self.now += step
        for warning in self.detector.check(self.now):
            deadline = self.deadlines[warning.run_id]
            assert deadline is not None
            assert warning.run_id not in self.warned, "warned twice"
            assert warning.run_id not in self.warned_ever, "warned twice"
            assert deadline <= self.now, "warned before its threshold"
            assert warning.at == self.now
            self.warned.add(warning.run_id)
            self.warned_ever.append(warning.run_id)
        # Nothing whose deadline has passed is left unwarned.
        for run_id, deadline in self.deadlines.items():
            if deadline is not None and deadline <= self.now:
                assert run_id in self.warned, f"{run_id} missed"

    @rule()
    def jump_to_next_deadline(self) -> None:
        deadline = self.detector.next_deadline()
        if deadline is not None and deadline > self.now:
            self.advance_and_check(deadline - self.now)

    @invariant()
    def next_deadline_is_earliest_pending(self) -> None:
        pending = [
            deadline
            for run_id, deadline in self.deadlines.items()
            if deadline is not None and run_id not in self.warned
        ]
        assert self.detector.next_deadline() == (min(pending) if pending else None)

    @invariant()
    def statistics_match_model(self) -> None:
        stats = self.detector.statistics()
        assert stats.tracked == len(self.deadlines)
        assert stats.watched == sum(d is not None for d in self.deadlines.values())
        assert stats.warned == len(self.warned_ever)


TestDetectorMachine = DetectorMachine.TestCase

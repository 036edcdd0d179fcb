"""The trigger probe still takes its readings from the benchmark it wraps (no timing is
checked): it relies on class attributes of the benchmark's vocabulary."""

from __future__ import annotations

from bench.lateness import Scenario, StartLog
from bench.trigger_probe import probe


def test_a_small_burst_is_read_and_the_benchmark_left_as_it_was() -> None:
    record, instants = StartLog.record, Scenario.instants
    reading = probe(Scenario.burst(50))  # measure_cronloop runs an event loop of its own
    assert reading.runs_per_s > 0
    assert reading.loop_cpu_us > 0
    assert reading.wall_us > 0
    assert (StartLog.record, Scenario.instants) == (record, instants)

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


def test_stages_split_every_run_and_the_controllers_are_left_as_they_were() -> None:
    from cronloop.controllers import CronJobController, JobController

    methods = (CronJobController.reconcile_batch, JobController.start_planned)
    reading = probe(Scenario.spread(40, 0.2), stages=True)
    assert len(reading.stages) == 3
    for p50, p99 in reading.stages:
        assert 0 <= p50 <= p99
    # The three stages add up to the lateness: their p50s cannot all be zero for a real run.
    assert sum(p50 for p50, _ in reading.stages) > 0
    assert (CronJobController.reconcile_batch, JobController.start_planned) == methods
    assert "stages" in reading.line()

"""Tests of the trigger benchmark's statistics helpers (bench/lateness.py): no timings asserted."""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import threading
from collections.abc import Coroutine

import pytest
from bench.lateness import (
    BURST_RUNS_PER_S_TARGET,
    SPREAD_P99_MS_TARGET,
    LatencyStats,
    Scenario,
    StartLog,
    as_measurement,
    comparisons,
    median_stats,
    percentile,
    standard_scenarios,
)
from hypothesis import given
from hypothesis import strategies as st

# -- percentile -----------------------------------------------------------------------------


def test_percentile_of_one_to_hundred() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0


def test_percentile_p99_of_ten_thousand_interpolates_between_ranks() -> None:
    values = [float(v * v) for v in range(10_000)]
    # position 0.99 * 9999 = 9899.01, between the 9900th and 9901st smallest
    expected = 9899**2 + 0.01 * (9900**2 - 9899**2)
    assert percentile(values, 99) == pytest.approx(expected)


def test_percentile_of_a_single_value_is_that_value() -> None:
    assert percentile([3.25], 50) == 3.25
    assert percentile([3.25], 99) == 3.25


def test_percentile_does_not_reorder_its_input() -> None:
    values = [3.0, 1.0, 2.0]
    percentile(values, 50)
    assert values == [3.0, 1.0, 2.0]


@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=2, max_size=300),
    st.integers(min_value=1, max_value=99),
)
def test_percentile_agrees_with_statistics_quantiles_inclusive(values: list[float], q: int) -> None:
    expected = statistics.quantiles(values, n=100, method="inclusive")[q - 1]
    assert percentile(values, q) == pytest.approx(expected, rel=1e-9, abs=1e-6)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="values: empty"):
        percentile([], 50)


@pytest.mark.parametrize("q", [-1, 100.5, math.nan])
def test_percentile_outside_zero_to_hundred_is_an_error(q: float) -> None:
    with pytest.raises(ValueError, match="q: must be between 0 and 100"):
        percentile([1.0, 2.0], q)


# -- LatencyStats -----------------------------------------------------------------------------


def test_stats_from_known_pairs() -> None:
    # ten runs due at 100 s that started 1, 2, ..., 10 ms late
    pairs = [(100.0, 100.0 + k / 1000) for k in range(1, 11)]
    stats = LatencyStats.from_pairs(pairs, missed=2, setup_s=1.5)
    assert stats.count == 10
    assert stats.missed == 2
    assert stats.setup_s == 1.5
    assert stats.p50_ms == pytest.approx(5.5)
    assert stats.p99_ms == pytest.approx(9.91)
    assert stats.max_ms == pytest.approx(10.0)
    # 10 runs between the first instant (100 s) and the last start (100.010 s)
    assert stats.runs_per_s == pytest.approx(1000.0)


def test_stats_rate_spans_from_first_instant_to_last_start() -> None:
    # a spread: due at 0, 1, 2, 3 s, each 0.5 s late; last start at 3.5 s
    pairs = [(float(k), k + 0.5) for k in range(4)]
    stats = LatencyStats.from_pairs(pairs)
    assert stats.p50_ms == pytest.approx(500.0)
    assert stats.runs_per_s == pytest.approx(4 / 3.5)
    assert (stats.missed, stats.setup_s) == (0, 0.0)


def test_stats_keep_early_starts_negative() -> None:
    pairs = [(10.0, 9.999), (10.0, 10.001), (10.0, 10.003)]
    stats = LatencyStats.from_pairs(pairs)
    assert stats.p50_ms == pytest.approx(1.0)
    assert stats.p99_ms == pytest.approx(2.96)  # interpolated from -1, 1 and 3 ms, not clamped
    assert stats.max_ms == pytest.approx(3.0)


def test_stats_accept_any_iterable() -> None:
    stats = LatencyStats.from_pairs((s, s + 0.002) for s in (1.0, 2.0))
    assert stats.count == 2
    assert stats.max_ms == pytest.approx(2.0)


def test_stats_of_no_runs_is_an_error() -> None:
    with pytest.raises(ValueError, match="pairs: empty"):
        LatencyStats.from_pairs([])


def test_stats_refuse_non_finite_times() -> None:
    with pytest.raises(ValueError, match=r"pairs\[1\]: times must be finite"):
        LatencyStats.from_pairs([(1.0, 1.1), (1.0, math.inf)])


def test_stats_refuse_a_span_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="no positive span"):
        LatencyStats.from_pairs([(5.0, 4.0)])


@pytest.mark.parametrize(
    ("missed", "setup_s", "field"),
    [(-1, 0.0, "missed"), (0, -0.1, "setup_s"), (0, math.nan, "setup_s")],
)
def test_stats_refuse_bad_counts(missed: int, setup_s: float, field: str) -> None:
    with pytest.raises(ValueError, match=f"{field}: must be"):
        LatencyStats.from_pairs([(1.0, 1.1)], missed=missed, setup_s=setup_s)


# -- aggregation -----------------------------------------------------------------------------


def _stats(p50: float, *, count: int = 100, missed: int = 0) -> LatencyStats:
    return LatencyStats(
        count=count,
        missed=missed,
        p50_ms=p50,
        p99_ms=p50 * 10,
        max_ms=p50 * 20,
        runs_per_s=1000 / p50,
        setup_s=p50 / 10,
    )


def test_median_stats_takes_the_median_of_each_statistic() -> None:
    median = median_stats([_stats(3.0), _stats(1.0), _stats(2.0), _stats(100.0)])
    assert median.p50_ms == pytest.approx(2.5)
    assert median.p99_ms == pytest.approx(25.0)
    assert median.max_ms == pytest.approx(50.0)
    # medians are taken per statistic, not of one chosen run
    assert median.runs_per_s == pytest.approx((1000 / 2 + 1000 / 3) / 2)
    assert median.setup_s == pytest.approx(0.25)


def test_median_stats_reports_the_worst_counts() -> None:
    runs = [_stats(1.0, count=100), _stats(1.0, count=97, missed=3), _stats(1.0)]
    median = median_stats(runs)
    assert median.count == 97
    assert median.missed == 3


def test_median_stats_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="runs: empty"):
        median_stats([])


def test_as_measurement_collects_one_statistic_per_run() -> None:
    measurement = as_measurement("apscheduler", [_stats(1.0), _stats(4.0), _stats(2.0)], "p99_ms")
    assert measurement.subject == "apscheduler"
    assert measurement.samples == (10.0, 40.0, 20.0)
    assert measurement.median == 20.0


def test_as_measurement_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="runs: empty"):
        as_measurement("cronloop", [], "runs_per_s")


def test_comparisons_of_a_spread_target_its_p99() -> None:
    scenario = Scenario.spread(100, 5.0)
    results = {
        "cronloop": [_stats(2.0), _stats(4.0), _stats(3.0)],
        "apscheduler": [_stats(30.0), _stats(10.0), _stats(20.0)],
        "call_at": [_stats(0.5)],
    }
    rows = comparisons(scenario, results)
    assert [row.metric for row in rows] == [
        "p50 lateness",
        "p99 lateness",
        "max lateness",
        "throughput",
    ]
    p99 = rows[1]
    assert p99.name == "spread 100 / 5 s: p99 lateness"
    assert p99.cronloop.samples == (20.0, 40.0, 30.0)
    assert p99.baseline is not None
    assert p99.baseline.subject == "apscheduler"
    assert p99.baseline.median == 200.0
    assert p99.higher_is_better is False
    assert p99.ratio == pytest.approx(200.0 / 30.0)
    assert (p99.target, p99.target_absolute, p99.met) == (SPREAD_P99_MS_TARGET, True, True)
    assert p99.extra == {"call_at (floor)": "5.00 ms"}
    assert [row.target for row in rows] == [None, SPREAD_P99_MS_TARGET, None, None]
    assert rows[3].higher_is_better is True
    assert "missed 0" in rows[3].notes


def test_comparisons_of_a_burst_target_its_runs_per_second() -> None:
    results = {"cronloop": [_stats(0.5)], "apscheduler": [_stats(1.0)]}
    rows = comparisons(Scenario.burst(100), results)
    assert [row.target for row in rows] == [None, None, None, BURST_RUNS_PER_S_TARGET]
    throughput = rows[3]
    assert throughput.cronloop.median == 2000.0
    assert throughput.met is False  # 2,000 runs/s is short of the 5,000 target
    assert throughput.ratio == pytest.approx(2.0)
    assert all(row.extra == {} for row in rows)  # no floor measured


def test_comparisons_need_both_subjects() -> None:
    with pytest.raises(ValueError, match="results: no runs for 'cronloop'"):
        comparisons(Scenario.burst(1), {"apscheduler": [_stats(1.0)]})
    with pytest.raises(ValueError, match="results: no runs for 'apscheduler'"):
        comparisons(Scenario.burst(1), {"cronloop": [_stats(1.0)], "apscheduler": []})


# -- scenarios -------------------------------------------------------------------------------


def test_burst_instants_are_all_the_first_instant() -> None:
    scenario = Scenario.burst(5, lead_s=2.0)
    assert scenario.instants(1000.0) == [1000.0] * 5
    assert (scenario.kind, scenario.n, scenario.spread_s, scenario.lead_s) == (
        "burst",
        5,
        0.0,
        2.0,
    )
    assert scenario.name == "burst 5"


def test_spread_instants_are_evenly_spaced_from_the_first_instant() -> None:
    scenario = Scenario.spread(10_000, 5.0)
    instants = scenario.instants(1000.0)
    assert len(instants) == 10_000
    assert instants[0] == 1000.0
    assert instants[-1] == pytest.approx(1000.0 + 5.0 * 9_999 / 10_000)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(instants)}
    assert gaps == {0.0005}
    assert scenario.name == "spread 10,000 / 5 s"


@given(st.integers(min_value=1, max_value=2000), st.floats(min_value=0.001, max_value=3600))
def test_spread_instants_stay_in_the_window_and_in_order(n: int, over_s: float) -> None:
    instants = Scenario.spread(n, over_s).instants(50.0)
    assert len(instants) == n
    assert instants == sorted(instants)
    assert instants[0] == 50.0
    assert instants[-1] < 50.0 + over_s


def test_per_second_instants_share_the_runs_among_whole_seconds() -> None:
    scenario = Scenario.per_second(10_000, 5)
    instants = scenario.instants(1000.0)
    assert len(instants) == 10_000
    assert instants == sorted(instants)
    counts = {instant: instants.count(instant) for instant in set(instants)}
    assert counts == {1000.0: 2000, 1001.0: 2000, 1002.0: 2000, 1003.0: 2000, 1004.0: 2000}
    assert scenario.name == "per-second 10,000 / 5 s"


def test_per_second_with_uneven_shares_stays_in_its_seconds() -> None:
    instants = Scenario.per_second(7, 3).instants(10.0)
    assert instants == [10.0, 10.0, 10.0, 11.0, 11.0, 12.0, 12.0]


def test_comparisons_target_the_even_spread_not_the_per_second_load() -> None:
    results = {"cronloop": [_stats(1.0)], "apscheduler": [_stats(2.0)]}
    rows = comparisons(Scenario.spread(100, 2.0), results)
    assert [row.target for row in rows] == [None, SPREAD_P99_MS_TARGET, None, None]
    rows = comparisons(Scenario.per_second(100, 2), results)
    assert [row.target for row in rows] == [None, None, None, None]


def test_standard_scenarios_match_the_issue() -> None:
    assert standard_scenarios(quick=False) == [Scenario.burst(10_000), Scenario.spread(10_000, 5)]
    quick = standard_scenarios(quick=True)
    assert [(s.kind, s.n) for s in quick] == [("burst", 1_000), ("spread", 1_000)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "storm", "n": 1}, "kind: must be"),
        ({"kind": "per_second", "n": 4, "spread_s": 1.5}, "spread_s: must be a whole number"),
        ({"kind": "per_second", "n": 4, "spread_s": 0.0}, "spread_s: must be a whole number"),
        ({"kind": "burst", "n": 0}, "n: must be an integer >= 1"),
        ({"kind": "burst", "n": True}, "n: must be an integer >= 1"),
        ({"kind": "burst", "n": 2.5}, "n: must be an integer >= 1"),
        ({"kind": "burst", "n": 1, "spread_s": 1.0}, "spread_s: must be 0 for a burst"),
        ({"kind": "spread", "n": 1, "spread_s": 0.0}, "spread_s: must be a finite number > 0"),
        ({"kind": "spread", "n": 1, "spread_s": math.inf}, "spread_s: must be a finite"),
        ({"kind": "burst", "n": 1, "lead_s": -1.0}, "lead_s: must be a finite number >= 0"),
    ],
)
def test_scenario_refuses_bad_fields(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Scenario(**kwargs)  # type: ignore[arg-type]


# -- start log -------------------------------------------------------------------------------


def test_start_log_pairs_each_start_with_its_instant() -> None:
    log = StartLog(3)
    for index in (2, 0, 1):
        log.record(index)
    assert log.started == 3
    pairs = log.pairs([10.0, 20.0, 30.0])
    assert [scheduled for scheduled, _ in pairs] == [30.0, 10.0, 20.0]


def test_start_log_leaves_unstarted_runs_out() -> None:
    log = StartLog(3)
    log.record(1)
    assert log.wait_all(0) is False
    assert [scheduled for scheduled, _ in log.pairs([1.0, 2.0, 3.0])] == [2.0]


def test_start_log_refuses_a_double_fire() -> None:
    log = StartLog(2)
    log.record(0)
    log.record(0)
    with pytest.raises(ValueError, match="run 0 started more than once"):
        log.pairs([1.0, 2.0])


def test_start_log_refuses_unknown_runs_and_wrong_instants() -> None:
    log = StartLog(2)
    log.record(5)
    with pytest.raises(ValueError, match=r"run 5 is outside 0\.\.1"):
        log.pairs([1.0, 2.0])
    with pytest.raises(ValueError, match="instants: expected 2 entries, got 3"):
        log.pairs([1.0, 2.0, 3.0])


@pytest.mark.parametrize("n", [0, -3, True])
def test_start_log_refuses_a_bad_size(n: int) -> None:
    with pytest.raises(ValueError, match="n: must be an integer >= 1"):
        StartLog(n)


def test_start_log_counts_starts_from_many_threads() -> None:
    log = StartLog(4000)
    barrier = threading.Barrier(4)

    def worker(first: int) -> None:
        barrier.wait(timeout=10)
        for index in range(first, 4000, 4):
            log.record(index)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    assert log.wait_all(timeout=30) is True
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert log.started == 4000
    assert len(log.pairs([0.0] * 4000)) == 4000


def _run(coroutine: Coroutine[None, None, None]) -> None:
    """Run on a private loop that is never installed as the current one.

    With pytest-asyncio 1.5, a module that mixes sync and async tests (or calls asyncio.run,
    which resets the current loop) leaves pytest-asyncio's loop unclosed, and -W error fails
    the session on the ResourceWarning.
    """
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coroutine)
    finally:
        loop.close()


def test_wait_all_async_wakes_when_another_thread_records_the_last_start() -> None:
    async def scenario() -> None:
        log = StartLog(2)
        log.record(0)
        waiting = asyncio.create_task(log.wait_all_async())
        await asyncio.sleep(0)  # let the waiter register before the last start
        assert not waiting.done()
        recorder = threading.Thread(target=log.record, args=(1,))
        recorder.start()
        async with asyncio.timeout(10):
            await waiting
        recorder.join(timeout=10)
        assert log.started == 2

    _run(scenario())


def test_wait_all_async_returns_at_once_when_all_started() -> None:
    async def scenario() -> None:
        log = StartLog(1)
        log.record(0)
        async with asyncio.timeout(10):
            await log.wait_all_async()

    _run(scenario())


def test_wait_all_async_wakes_for_starts_on_the_loop() -> None:
    async def scenario() -> None:
        log = StartLog(1)
        asyncio.get_running_loop().call_soon(log.record, 0)
        async with asyncio.timeout(10):
            await log.wait_all_async()
        assert log.started == 1

    _run(scenario())

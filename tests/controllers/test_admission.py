"""Admission control: every decision path, hysteresis, backoff, sample caching and metrics.

The host is a :class:`FakeSampler` and time is the ``now`` passed to ``decide``; one smoke test
reads the real host through psutil and checks only that the figures are in range.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from cronloop.controllers.admission import (
    AT_LEAST_ONCE,
    AT_MOST_ONCE,
    AdmissionController,
    AdmissionLimit,
    AdmissionLimits,
    Admit,
    Delay,
    HostLoad,
    PsutilSampler,
    Skip,
)

METRIC = "cronloop_admission_decisions_total"


class FakeSampler:
    """A host whose figures the test sets; counts how often it is sampled."""

    def __init__(self, cpu: float = 10.0, memory: float = 10.0, load1: float = 0.1) -> None:
        self.cpu = cpu
        self.memory = memory
        self.load1 = load1
        self.calls = 0

    def sample(self) -> HostLoad:
        self.calls += 1
        return HostLoad(
            cpu_percent=self.cpu,
            memory_percent=self.memory,
            load1_per_core=self.load1,
            at=float(self.calls),
        )


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def controller(
    sampler: FakeSampler,
    *,
    sample_ttl: float = 0.0,
    initial_delay: float = 1.0,
    max_delay: float = 60.0,
    registry: CollectorRegistry | None = None,
    **limits: float,
) -> AdmissionController:
    return AdmissionController(
        AdmissionLimits.model_validate(limits),
        sampler,
        sample_ttl=sample_ttl,
        initial_delay=initial_delay,
        max_delay=max_delay,
        registry=registry,
    )


def test_no_limits_always_admits_without_sampling() -> None:
    sampler = FakeSampler(cpu=100.0, memory=100.0, load1=50.0)
    ctl = controller(sampler)
    for now in range(5):
        for guarantee in (AT_LEAST_ONCE, AT_MOST_ONCE):
            assert ctl.decide(guarantee, key="job", now=float(now)) == Admit(load=None)
    assert sampler.calls == 0
    stats = ctl.statistics()
    assert (stats.admitted, stats.delayed, stats.skipped) == (10, 0, 0)


@pytest.mark.parametrize(
    ("limits", "load", "limit", "reason"),
    [
        (
            {"max_cpu_percent": 90.0},
            {"cpu": 97.5},
            AdmissionLimit.CPU,
            "HostOverloaded: cpu 97.5% > limit 90%",
        ),
        (
            {"max_memory_percent": 80.0},
            {"memory": 81.25},
            AdmissionLimit.MEMORY,
            "HostOverloaded: memory 81.2% > limit 80%",
        ),
        (
            {"max_load1_per_core": 1.5},
            {"load1": 2.25},
            AdmissionLimit.LOAD1,
            "HostOverloaded: load1/core 2.25 > limit 1.5",
        ),
    ],
)
@pytest.mark.parametrize("guarantee", [AT_LEAST_ONCE, AT_MOST_ONCE])
def test_each_limit_delays_or_skips_by_guarantee(
    limits: dict[str, float],
    load: dict[str, float],
    limit: AdmissionLimit,
    reason: str,
    guarantee: str,
) -> None:
    sampler = FakeSampler(**load)
    ctl = AdmissionController(AdmissionLimits.model_validate(limits), sampler, sample_ttl=0.0)
    decision = ctl.decide(guarantee, key="job", now=0.0)
    expected_load = HostLoad(
        cpu_percent=sampler.cpu, memory_percent=sampler.memory, load1_per_core=sampler.load1, at=1.0
    )
    if guarantee == AT_LEAST_ONCE:
        assert decision == Delay(
            retry_after=1.0, reason=reason, limits=(limit,), load=expected_load
        )
    else:
        assert decision == Skip(reason=reason, limits=(limit,), load=expected_load)
    stats = ctl.statistics()
    assert stats.by_limit[limit] == 1
    assert stats.tripped == (limit,)


@pytest.mark.parametrize(
    ("limits", "load"),
    [
        ({"max_cpu_percent": 90.0}, {"cpu": 90.0}),
        ({"max_memory_percent": 80.0}, {"memory": 80.0}),
        ({"max_load1_per_core": 1.5}, {"load1": 1.5}),
    ],
)
def test_value_exactly_at_limit_is_admitted(
    limits: dict[str, float], load: dict[str, float]
) -> None:
    ctl = AdmissionController(AdmissionLimits.model_validate(limits), FakeSampler(**load))
    decision = ctl.decide(AT_MOST_ONCE, key="job", now=0.0)
    assert isinstance(decision, Admit)
    assert decision.load is not None
    assert ctl.statistics().tripped == ()


def test_unconfigured_measures_are_ignored() -> None:
    ctl = controller(FakeSampler(cpu=100.0, load1=9.0, memory=50.0), max_memory_percent=60.0)
    assert isinstance(ctl.decide(AT_MOST_ONCE, key="job", now=0.0), Admit)


def test_hysteresis_requires_dropping_to_resume_level() -> None:
    sampler = FakeSampler(cpu=95.0)
    ctl = controller(sampler, max_cpu_percent=90.0)  # resume level 85.5 by default

    assert isinstance(ctl.decide(AT_MOST_ONCE, key="job", now=0.0), Skip)
    sampler.cpu = 88.0  # under the limit, but the limit is tripped
    decision = ctl.decide(AT_MOST_ONCE, key="job", now=1.0)
    assert isinstance(decision, Skip)
    assert decision.reason == (
        "HostOverloaded: cpu 88% > resume level 85.5% (limit 90%, recovering)"
    )
    assert ctl.statistics().tripped == (AdmissionLimit.CPU,)

    sampler.cpu = 85.5
    assert isinstance(ctl.decide(AT_MOST_ONCE, key="job", now=2.0), Admit)
    assert ctl.statistics().tripped == ()

    sampler.cpu = 89.0  # no longer tripped: only the limit itself applies again
    assert isinstance(ctl.decide(AT_MOST_ONCE, key="job", now=3.0), Admit)


def test_resume_ratio_one_disables_hysteresis() -> None:
    sampler = FakeSampler(memory=95.0)
    ctl = controller(sampler, max_memory_percent=90.0, resume_ratio=1.0)
    assert isinstance(ctl.decide(AT_MOST_ONCE, key="job", now=0.0), Skip)
    sampler.memory = 89.9
    assert isinstance(ctl.decide(AT_MOST_ONCE, key="job", now=1.0), Admit)


def test_at_least_once_backoff_grows_to_cap_and_admit_resets_it() -> None:
    sampler = FakeSampler(cpu=99.0)
    ctl = controller(sampler, initial_delay=1.0, max_delay=5.0, max_cpu_percent=90.0)

    delays = []
    for now in range(6):
        decision = ctl.decide(AT_LEAST_ONCE, key="a", now=float(now))
        assert isinstance(decision, Delay)
        delays.append(decision.retry_after)
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]

    other = ctl.decide(AT_LEAST_ONCE, key="b", now=6.0)
    assert isinstance(other, Delay)
    assert other.retry_after == 1.0  # backoff is per key
    assert ctl.statistics().backing_off == 2

    sampler.cpu = 10.0
    assert isinstance(ctl.decide(AT_LEAST_ONCE, key="a", now=7.0), Admit)
    assert ctl.statistics().backing_off == 1

    sampler.cpu = 99.0
    again = ctl.decide(AT_LEAST_ONCE, key="a", now=8.0)
    assert isinstance(again, Delay)
    assert again.retry_after == 1.0
    still = ctl.decide(AT_LEAST_ONCE, key="b", now=9.0)
    assert isinstance(still, Delay)
    assert still.retry_after == 2.0


def test_backoff_at_cap_does_not_overflow() -> None:
    ctl = controller(FakeSampler(cpu=99.0), initial_delay=1e-3, max_delay=1e3, max_cpu_percent=1)
    decision: Delay | Admit | Skip = Admit()
    for now in range(5000):
        decision = ctl.decide(AT_LEAST_ONCE, key="a", now=float(now))
    assert isinstance(decision, Delay)
    assert decision.retry_after == 1e3


def test_forget_drops_backoff_state() -> None:
    ctl = controller(FakeSampler(cpu=99.0), max_cpu_percent=90.0)
    ctl.decide(AT_LEAST_ONCE, key="a", now=0.0)
    ctl.decide(AT_LEAST_ONCE, key="a", now=1.0)
    ctl.forget("a")
    ctl.forget("never-seen")
    assert ctl.statistics().backing_off == 0
    decision = ctl.decide(AT_LEAST_ONCE, key="a", now=2.0)
    assert isinstance(decision, Delay)
    assert decision.retry_after == 1.0


def test_at_most_once_skip_keeps_no_backoff_state() -> None:
    ctl = controller(FakeSampler(load1=3.0), max_load1_per_core=2.0)
    for now in range(3):
        assert isinstance(ctl.decide(AT_MOST_ONCE, key="a", now=float(now)), Skip)
    assert ctl.statistics().backing_off == 0


def test_several_limits_most_severe_first() -> None:
    registry = CollectorRegistry()
    sampler = FakeSampler(cpu=91.0, memory=99.0)
    ctl = controller(sampler, registry=registry, max_cpu_percent=90.0, max_memory_percent=50.0)
    decision = ctl.decide(AT_LEAST_ONCE, key="a", now=0.0)
    assert isinstance(decision, Delay)
    assert decision.limits == (AdmissionLimit.MEMORY, AdmissionLimit.CPU)
    assert decision.reason == ("HostOverloaded: memory 99% > limit 50%, cpu 91% > limit 90%")
    stats = ctl.statistics()
    assert dict(stats.by_limit) == {
        AdmissionLimit.CPU: 0,
        AdmissionLimit.MEMORY: 1,
        AdmissionLimit.LOAD1: 0,
    }
    assert stats.tripped == (AdmissionLimit.CPU, AdmissionLimit.MEMORY)
    labels = {"decision": "delay", "limit": "memory"}
    assert registry.get_sample_value(METRIC, labels) == 1.0
    assert registry.get_sample_value(METRIC, {"decision": "delay", "limit": "cpu"}) == 0.0


def test_sample_is_cached_for_ttl() -> None:
    sampler = FakeSampler(cpu=50.0)
    ctl = controller(sampler, sample_ttl=1.0, max_cpu_percent=90.0)
    for now in (10.0, 10.5, 10.999):
        assert isinstance(ctl.decide(AT_LEAST_ONCE, key="a", now=now), Admit)
    assert sampler.calls == 1

    sampler.cpu = 99.0  # not seen until the cached sample expires
    assert isinstance(ctl.decide(AT_LEAST_ONCE, key="a", now=10.9999), Admit)
    assert sampler.calls == 1
    assert isinstance(ctl.decide(AT_LEAST_ONCE, key="a", now=11.0), Delay)
    assert sampler.calls == 2

    # A clock reading before the sample (a stale ``now``) resamples instead of trusting it.
    ctl.decide(AT_LEAST_ONCE, key="a", now=5.0)
    assert sampler.calls == 3


def test_zero_ttl_samples_every_decision() -> None:
    sampler = FakeSampler()
    ctl = controller(sampler, sample_ttl=0.0, max_cpu_percent=90.0)
    for _ in range(3):
        ctl.decide(AT_MOST_ONCE, key="a", now=1.0)
    assert sampler.calls == 3


def test_set_limits_applies_new_limits_and_restarts_hysteresis() -> None:
    sampler = FakeSampler(cpu=88.0)
    ctl = controller(sampler, sample_ttl=10.0, max_cpu_percent=80.0)
    assert isinstance(ctl.decide(AT_MOST_ONCE, key="a", now=0.0), Skip)

    ctl.set_limits(AdmissionLimits(max_cpu_percent=90.0))
    assert ctl.limits == AdmissionLimits(max_cpu_percent=90.0)
    # Within the old sample's TTL, yet decided on a fresh sample against the new limit.
    assert isinstance(ctl.decide(AT_MOST_ONCE, key="a", now=1.0), Admit)
    assert sampler.calls == 2
    assert ctl.statistics().tripped == ()

    ctl.set_limits(AdmissionLimits())
    sampler.cpu = 100.0
    assert isinstance(ctl.decide(AT_MOST_ONCE, key="a", now=2.0), Admit)
    assert sampler.calls == 2


def test_prometheus_counter_counts_each_decision() -> None:
    registry = CollectorRegistry()
    sampler = FakeSampler(cpu=10.0)
    ctl = controller(sampler, registry=registry, max_cpu_percent=90.0)
    # Every series exists from the start, at zero.
    for decision in ("delay", "skip"):
        for limit in ("cpu", "memory", "load1"):
            labels = {"decision": decision, "limit": limit}
            assert registry.get_sample_value(METRIC, labels) == 0.0
    assert registry.get_sample_value(METRIC, {"decision": "admit", "limit": "none"}) == 0.0

    ctl.decide(AT_LEAST_ONCE, key="a", now=0.0)
    ctl.decide(AT_MOST_ONCE, key="b", now=1.0)
    sampler.cpu = 95.0
    ctl.decide(AT_LEAST_ONCE, key="a", now=2.0)
    ctl.decide(AT_LEAST_ONCE, key="a", now=3.0)
    ctl.decide(AT_MOST_ONCE, key="b", now=4.0)

    assert registry.get_sample_value(METRIC, {"decision": "admit", "limit": "none"}) == 2.0
    assert registry.get_sample_value(METRIC, {"decision": "delay", "limit": "cpu"}) == 2.0
    assert registry.get_sample_value(METRIC, {"decision": "skip", "limit": "cpu"}) == 1.0
    assert registry.get_sample_value(METRIC, {"decision": "skip", "limit": "memory"}) == 0.0
    stats = ctl.statistics()
    assert (stats.admitted, stats.delayed, stats.skipped) == (2, 2, 1)
    assert sum(stats.by_limit.values()) == stats.delayed + stats.skipped


def test_statistics_snapshot_is_immutable() -> None:
    ctl = controller(FakeSampler(cpu=99.0), max_cpu_percent=90.0)
    ctl.decide(AT_MOST_ONCE, key="a", now=0.0)
    stats = ctl.statistics()
    with pytest.raises(TypeError):
        stats.by_limit[AdmissionLimit.CPU] = 0  # type: ignore[index]
    ctl.decide(AT_MOST_ONCE, key="a", now=1.0)
    assert stats.skipped == 1
    assert stats.by_limit[AdmissionLimit.CPU] == 1


def test_unknown_guarantee_is_rejected() -> None:
    ctl = controller(FakeSampler(), max_cpu_percent=90.0)
    with pytest.raises(ValueError, match=r"guarantee must be .* got 'ExactlyOnce'"):
        ctl.decide("ExactlyOnce", key="a", now=0.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_cpu_percent", 0.0),
        ("max_cpu_percent", 100.5),
        ("max_cpu_percent", math.nan),
        ("max_memory_percent", -1.0),
        ("max_memory_percent", 101.0),
        ("max_load1_per_core", 0.0),
        ("max_load1_per_core", math.inf),
        ("resume_ratio", 0.0),
        ("resume_ratio", 1.5),
        ("max_cpu_percent", "lots"),
    ],
)
def test_invalid_limits_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        AdmissionLimits.model_validate({field: value})


def test_limits_read_camel_case_and_reject_unknown_fields() -> None:
    limits = AdmissionLimits.model_validate(
        {"maxCpuPercent": 90, "maxMemoryPercent": 85, "maxLoad1PerCore": 2, "resumeRatio": 0.9}
    )
    assert limits == AdmissionLimits(
        max_cpu_percent=90.0, max_memory_percent=85.0, max_load1_per_core=2.0, resume_ratio=0.9
    )
    assert limits.configured
    assert not AdmissionLimits().configured
    with pytest.raises(ValidationError, match="maxCpu"):
        AdmissionLimits.model_validate({"maxCpu": 90})
    with pytest.raises(ValidationError, match="frozen"):
        limits.max_cpu_percent = 10.0


@pytest.mark.parametrize(
    ("sample_ttl", "initial_delay", "max_delay", "name"),
    [
        (-1.0, 1.0, 60.0, "sample_ttl"),
        (math.inf, 1.0, 60.0, "sample_ttl"),
        (1.0, 0.0, 60.0, "initial_delay"),
        (1.0, 1.0, math.nan, "max_delay"),
        (1.0, 10.0, 5.0, "max_delay"),
    ],
)
def test_invalid_controller_options_name_the_argument(
    sample_ttl: float, initial_delay: float, max_delay: float, name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        AdmissionController(
            AdmissionLimits(),
            FakeSampler(),
            sample_ttl=sample_ttl,
            initial_delay=initial_delay,
            max_delay=max_delay,
        )


@given(st.lists(st.booleans(), max_size=60))
def test_backoff_doubles_within_a_streak_and_resets_on_admit(overloads: list[bool]) -> None:
    sampler = FakeSampler()
    ctl = controller(sampler, initial_delay=0.5, max_delay=30.0, max_cpu_percent=90.0)
    streak = 0
    for now, overloaded in enumerate(overloads):
        sampler.cpu = 99.0 if overloaded else 1.0
        decision = ctl.decide(AT_LEAST_ONCE, key="a", now=float(now))
        if overloaded:
            assert isinstance(decision, Delay)
            assert decision.retry_after == min(30.0, 0.5 * 2.0**streak)
            streak += 1
        else:
            assert isinstance(decision, Admit)
            streak = 0
    stats = ctl.statistics()
    assert stats.delayed == sum(overloads)
    assert stats.admitted == len(overloads) - sum(overloads)


def test_psutil_sampler_reads_sane_figures() -> None:
    clock = FakeClock(100.0)
    sampler = PsutilSampler(clock=clock, min_cpu_interval=0.5)

    first = sampler.sample()
    assert first.at == 100.0
    assert first.cpu_percent == 0.0  # interval too short to measure: reported as unknown
    assert 0.0 <= first.memory_percent <= 100.0
    assert first.load1_per_core >= 0.0
    assert math.isfinite(first.load1_per_core)

    clock.now = 101.0
    later = sampler.sample()
    assert later.at == 101.0
    assert 0.0 <= later.cpu_percent <= 100.0
    assert 0.0 <= later.memory_percent <= 100.0


def test_default_sampler_is_psutil() -> None:
    ctl = AdmissionController(AdmissionLimits(max_memory_percent=100.0))
    decision = ctl.decide(AT_LEAST_ONCE, key="a", now=0.0)
    assert isinstance(decision, Admit)
    assert decision.load is not None
    assert 0.0 <= decision.load.memory_percent <= 100.0


def test_psutil_sampler_rejects_bad_interval() -> None:
    with pytest.raises(ValueError, match="min_cpu_interval"):
        PsutilSampler(min_cpu_interval=-0.1)

"""Admission control: delay or skip a due run while the host is over its CPU, memory or load limits.

When a run becomes due, its controller asks :meth:`AdmissionController.decide`. If the host is
within every configured limit the run is admitted; otherwise it is **delayed** when its
CronJob's guarantee is ``AtLeastOnce`` (it must still run, later) or **skipped** when it is
``AtMostOnce`` (such a job accepts a missed run but never an extra one, and a delayed start
could pile onto the next scheduled run). Every delay and skip carries a reason naming the
limit and the values, and every decision is counted (:meth:`AdmissionController.statistics`,
and optionally a Prometheus counter).

Sampling the host goes through the :class:`HostSampler` protocol, so tests inject a fake and
production uses :class:`PsutilSampler`. A sample is cached for ``sample_ttl`` seconds of the
caller's clock because many runs may be admitted per second and each sample reads ``/proc``.

Once a limit is exceeded it stays *tripped* until its value falls to ``limit x resume_ratio``
(hysteresis): without it a host hovering at the limit would flap between admitting a burst of
runs, overloading, and delaying them all.

Hand-written because no library makes this decision: psutil supplies the numbers and
prometheus-client the counter; the policy (limits, hysteresis, guarantee-dependent outcome,
per-key backoff) is cronloop's own. The backoff is a per-key failure counter in the shape of
client-go's ``ItemExponentialFailureRateLimiter``, kept here rather than borrowed from the
work queue so that this module stays a pure, synchronous policy object.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol, TypeAlias

import psutil
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from pydantic import Field

from cronloop.api.meta import ApiModel

__all__ = [
    "AT_LEAST_ONCE",
    "AT_MOST_ONCE",
    "HOST_OVERLOADED",
    "Admission",
    "AdmissionController",
    "AdmissionLimit",
    "AdmissionLimits",
    "AdmissionStatistics",
    "Admit",
    "Delay",
    "HostLoad",
    "HostSampler",
    "PsutilSampler",
    "Skip",
]

#: The CronJob guarantee under which an overloaded host delays a run (it must still run).
AT_LEAST_ONCE: Final = "AtLeastOnce"
#: The CronJob guarantee under which an overloaded host skips a run (it must not run twice).
AT_MOST_ONCE: Final = "AtMostOnce"
#: The reason prefix of every delay and skip decided here.
HOST_OVERLOADED: Final = "HostOverloaded"

_GUARANTEES: Final = (AT_LEAST_ONCE, AT_MOST_ONCE)


class AdmissionLimit(enum.StrEnum):
    """One host measure with a limit; the value is the ``limit`` label of the metric."""

    CPU = "cpu"
    MEMORY = "memory"
    LOAD1 = "load1"


class AdmissionLimits(ApiModel):
    """The configured host limits; a limit left unset is not enforced.

    Field names are camelCase in YAML/JSON (``maxCpuPercent``) and snake_case in Python.
    Invalid values raise :class:`pydantic.ValidationError` (a :class:`ValueError`) naming the
    field.
    """

    max_cpu_percent: float | None = Field(
        default=None, gt=0, le=100, allow_inf_nan=False, description="Host CPU busy percentage."
    )
    max_memory_percent: float | None = Field(
        default=None,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="Used memory percentage (total minus available, over total).",
    )
    max_load1_per_core: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="1-minute load average divided by the number of logical CPUs.",
    )
    resume_ratio: float = Field(
        default=0.95,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description=(
            "Hysteresis: a tripped limit keeps refusing runs until its value falls to "
            "limit x resume_ratio; 1 disables hysteresis."
        ),
    )

    @property
    def configured(self) -> bool:
        """True when at least one limit is set (otherwise every run is admitted unsampled)."""
        return any(value is not None for _, value in self.items())

    def items(self) -> tuple[tuple[AdmissionLimit, float | None], ...]:
        """Each host measure with its configured maximum (``None`` when not enforced)."""
        return (
            (AdmissionLimit.CPU, self.max_cpu_percent),
            (AdmissionLimit.MEMORY, self.max_memory_percent),
            (AdmissionLimit.LOAD1, self.max_load1_per_core),
        )


@dataclass(frozen=True, slots=True)
class HostLoad:
    """One sample of the host: percentages in 0..100, load per core, and the sampler's time."""

    cpu_percent: float
    memory_percent: float
    load1_per_core: float
    at: float

    def value(self, limit: AdmissionLimit) -> float:
        """The sampled value that ``limit`` applies to."""
        if limit is AdmissionLimit.CPU:
            return self.cpu_percent
        if limit is AdmissionLimit.MEMORY:
            return self.memory_percent
        return self.load1_per_core


class HostSampler(Protocol):
    """Something that measures the host; must be cheap enough to call about once per second."""

    def sample(self) -> HostLoad:
        """Measure the host now."""
        ...


class PsutilSampler:
    """Samples the host with psutil, without blocking.

    CPU usage is ``psutil.cpu_percent(interval=None)``: the busy share *since the previous
    call*. The first call only primes psutil's counter, so the constructor makes it. psutil
    keeps that counter per thread: construct and use a sampler from the same thread (the
    controller's event-loop thread); in another thread the first reading is 0.0.

    A reading over a very short interval is noise (one busy clock tick out of one is 100%), so
    the CPU figure is refreshed at most every ``min_cpu_interval`` seconds and the previous
    figure is reused in between; until the first refresh the CPU reading is 0.0 (unknown, so
    not enforced). Memory and load are read on every call. The figures are the host's, not a
    container's cgroup quota, and the load average is divided by the logical CPU count.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_cpu_interval: float = 0.1,
    ) -> None:
        if not (math.isfinite(min_cpu_interval) and min_cpu_interval >= 0):
            raise ValueError(f"min_cpu_interval must be >= 0 seconds, got {min_cpu_interval!r}")
        self._clock = clock
        self._min_cpu_interval = min_cpu_interval
        self._cores = psutil.cpu_count(logical=True) or 1
        psutil.cpu_percent(interval=None)
        self._cpu_at = clock()
        self._cpu = 0.0

    def sample(self) -> HostLoad:
        """Measure CPU, memory and 1-minute load per core now."""
        now = self._clock()
        if now - self._cpu_at >= self._min_cpu_interval:
            self._cpu = float(psutil.cpu_percent(interval=None))
            self._cpu_at = now
        return HostLoad(
            cpu_percent=self._cpu,
            memory_percent=float(psutil.virtual_memory().percent),
            load1_per_core=psutil.getloadavg()[0] / self._cores,
            at=now,
        )


@dataclass(frozen=True, slots=True)
class Admit:
    """Start the run now. ``load`` is the sample decided on (``None`` if no limit is set)."""

    load: HostLoad | None = None


@dataclass(frozen=True, slots=True)
class Delay:
    """Ask again after ``retry_after`` seconds (``AtLeastOnce`` runs on an overloaded host)."""

    retry_after: float
    reason: str
    limits: tuple[AdmissionLimit, ...]
    load: HostLoad


@dataclass(frozen=True, slots=True)
class Skip:
    """Do not start the run; record it as skipped (``AtMostOnce`` runs on an overloaded host)."""

    reason: str
    limits: tuple[AdmissionLimit, ...]
    load: HostLoad


#: What :meth:`AdmissionController.decide` returns.
Admission: TypeAlias = Admit | Delay | Skip


@dataclass(frozen=True, slots=True)
class AdmissionStatistics:
    """Counters since construction, and the current state.

    ``by_limit`` attributes each delay and skip to its primary limit (the one furthest over
    its level), so its values sum to ``delayed + skipped``.
    """

    admitted: int
    delayed: int
    skipped: int
    by_limit: Mapping[AdmissionLimit, int]
    tripped: tuple[AdmissionLimit, ...]
    backing_off: int


@dataclass(frozen=True, slots=True)
class _Violation:
    limit: AdmissionLimit
    value: float
    maximum: float
    level: float  # the value must stay at or below this; below maximum while recovering

    @property
    def severity(self) -> float:
        return self.value / self.level

    def describe(self) -> str:
        unit = "%" if self.limit is not AdmissionLimit.LOAD1 else ""
        name = "load1/core" if self.limit is AdmissionLimit.LOAD1 else self.limit.value
        if self.level == self.maximum:
            return f"{name} {self.value:.3g}{unit} > limit {self.maximum:.3g}{unit}"
        return (
            f"{name} {self.value:.3g}{unit} > resume level {self.level:.3g}{unit} "
            f"(limit {self.maximum:.3g}{unit}, recovering)"
        )


class AdmissionController:
    """Decides whether a due run may start now, given the host's load and the run's guarantee.

    ``sampler`` defaults to a :class:`PsutilSampler`, created on first need. A sample is reused
    while ``0 <= now - sampled_at < sample_ttl`` (``now`` being the caller's clock passed to
    :meth:`decide`; 0 disables caching). A delay for a key is ``initial_delay x 2**n`` capped at
    ``max_delay``, where ``n`` counts that key's consecutive delays; an admit resets it. Keys
    whose object is deleted while backing off should be dropped with :meth:`forget`.

    With ``registry``, the counter ``cronloop_admission_decisions_total{decision,limit}`` is
    registered on it (``decision`` in admit/delay/skip, ``limit`` the primary limit or
    ``none``); a registry accepts one controller. Not thread-safe: call from one event loop.
    Errors raised by the sampler propagate to the caller.
    """

    def __init__(
        self,
        limits: AdmissionLimits,
        sampler: HostSampler | None = None,
        *,
        sample_ttl: float = 1.0,
        initial_delay: float = 1.0,
        max_delay: float = 60.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        _check_seconds("sample_ttl", sample_ttl, allow_zero=True)
        _check_seconds("initial_delay", initial_delay, allow_zero=False)
        _check_seconds("max_delay", max_delay, allow_zero=False)
        if max_delay < initial_delay:
            raise ValueError(f"max_delay ({max_delay}) must be >= initial_delay ({initial_delay})")
        self._limits = limits
        self._sampler = sampler
        self._sample_ttl = sample_ttl
        self._initial_delay = initial_delay
        self._max_delay = max_delay
        self._load: HostLoad | None = None
        self._sampled_at = 0.0
        self._violations: tuple[_Violation, ...] = ()
        self._tripped: set[AdmissionLimit] = set()
        self._failures: dict[str, int] = {}
        self._admitted = 0
        self._delayed = 0
        self._skipped = 0
        self._by_limit = dict.fromkeys(AdmissionLimit, 0)
        self._counter: PromCounter | None = None
        if registry is not None:
            self._counter = PromCounter(
                "cronloop_admission_decisions",
                "Admission decisions for due runs, by decision and primary overloaded limit.",
                ["decision", "limit"],
                registry=registry,
            )
            # Pre-create every series so rate() sees a zero before the first overload.
            self._counter.labels("admit", "none")
            for limit in AdmissionLimit:
                self._counter.labels("delay", limit.value)
                self._counter.labels("skip", limit.value)

    @property
    def limits(self) -> AdmissionLimits:
        """The limits in force."""
        return self._limits

    def set_limits(self, limits: AdmissionLimits) -> None:
        """Apply new limits (a configuration reload): hysteresis and the sample cache restart."""
        self._limits = limits
        self._tripped.clear()
        self._load = None
        self._violations = ()

    def decide(self, guarantee: str, *, key: str, now: float) -> Admission:
        """Admit, delay or skip one due run of the object ``key`` at time ``now``.

        ``guarantee`` is ``"AtLeastOnce"`` (delay when overloaded) or ``"AtMostOnce"`` (skip
        when overloaded). ``now`` is the caller's monotonic clock, used for the sample cache.
        """
        if guarantee not in _GUARANTEES:
            raise ValueError(
                f"guarantee must be {AT_LEAST_ONCE!r} or {AT_MOST_ONCE!r}, got {guarantee!r}"
            )
        violations = self._current_violations(now)
        if not violations:
            self._failures.pop(key, None)
            self._admitted += 1
            if self._counter is not None:
                self._counter.labels("admit", "none").inc()
            return Admit(load=self._load)
        load = self._load
        assert load is not None  # set whenever there are violations
        primary = violations[0].limit
        limits = tuple(v.limit for v in violations)
        reason = f"{HOST_OVERLOADED}: " + ", ".join(v.describe() for v in violations)
        self._by_limit[primary] += 1
        if guarantee == AT_MOST_ONCE:
            self._skipped += 1
            if self._counter is not None:
                self._counter.labels("skip", primary.value).inc()
            return Skip(reason=reason, limits=limits, load=load)
        failures = self._failures.get(key, 0)
        retry_after = min(self._max_delay, self._initial_delay * 2.0**failures)
        if retry_after < self._max_delay:
            # Stop counting at the cap: the delay no longer grows and 2.0**n would overflow.
            self._failures[key] = failures + 1
        else:
            self._failures[key] = failures
        self._delayed += 1
        if self._counter is not None:
            self._counter.labels("delay", primary.value).inc()
        return Delay(retry_after=retry_after, reason=reason, limits=limits, load=load)

    def forget(self, key: str) -> None:
        """Drop the backoff state of ``key`` (its object was deleted); unknown keys are fine."""
        self._failures.pop(key, None)

    def statistics(self) -> AdmissionStatistics:
        """A snapshot of the counters and of the current state."""
        return AdmissionStatistics(
            admitted=self._admitted,
            delayed=self._delayed,
            skipped=self._skipped,
            by_limit=MappingProxyType(dict(self._by_limit)),
            tripped=tuple(limit for limit in AdmissionLimit if limit in self._tripped),
            backing_off=len(self._failures),
        )

    def _current_violations(self, now: float) -> tuple[_Violation, ...]:
        if not self._limits.configured:
            return ()
        age = now - self._sampled_at
        if self._load is None or not 0 <= age < self._sample_ttl:
            if self._sampler is None:
                self._sampler = PsutilSampler()
            self._load = self._sampler.sample()
            self._sampled_at = now
            self._violations = self._evaluate(self._load)
        return self._violations

    def _evaluate(self, load: HostLoad) -> tuple[_Violation, ...]:
        violations: list[_Violation] = []
        for limit, maximum in self._limits.items():
            if maximum is None:
                self._tripped.discard(limit)
                continue
            value = load.value(limit)
            level = maximum * self._limits.resume_ratio if limit in self._tripped else maximum
            if value > level:
                self._tripped.add(limit)
                violations.append(_Violation(limit, value, maximum, level))
            else:
                self._tripped.discard(limit)
        # Most severe first: the reason leads with it and the metric is labelled with it.
        violations.sort(key=lambda v: v.severity, reverse=True)
        return tuple(violations)


def _check_seconds(name: str, value: float, *, allow_zero: bool) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")

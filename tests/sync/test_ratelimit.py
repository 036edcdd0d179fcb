from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Hashable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cronloop.sync.ratelimit import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    ItemFastSlowRateLimiter,
    JitterRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    WithMaxWaitRateLimiter,
    default_controller_rate_limiter,
    loop_or_monotonic_time,
)


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recording:
    """A limiter that returns a fixed delay and records every call."""

    def __init__(self, delay: float, requeues: int = 0) -> None:
        self.delay = delay
        self.requeues = requeues
        self.whens: list[Hashable] = []
        self.forgotten: list[Hashable] = []

    def when(self, item: Hashable) -> float:
        self.whens.append(item)
        return self.delay

    def forget(self, item: Hashable) -> None:
        self.forgotten.append(item)

    def num_requeues(self, item: Hashable) -> int:
        return self.requeues


@pytest.mark.looptime
async def test_bucket_default_clock_is_the_loop_clock() -> None:
    bucket = BucketRateLimiter(1.0, 1)
    assert bucket.when("a") == 0.0
    assert bucket.when("b") == pytest.approx(1.0)
    await asyncio.sleep(10)  # fake time: refills the bucket
    assert bucket.when("c") == 0.0
    assert loop_or_monotonic_time() == asyncio.get_running_loop().time()


def test_exponential_doubles_per_item_and_caps() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.001, 1.0)
    delays = [limiter.when("a") for _ in range(12)]
    assert delays[:10] == [0.001 * 2**n for n in range(10)]
    assert delays[10:] == [1.0, 1.0]
    assert limiter.num_requeues("a") == 12
    assert limiter.when("b") == 0.001, "items are independent"


def test_exponential_forget_resets() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    limiter.when("a")
    limiter.when("a")
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == 0.005
    limiter.forget("never-seen")  # no error


def test_exponential_is_overflow_safe() -> None:
    limiter = ItemExponentialFailureRateLimiter(1.0, 1000.0)
    for _ in range(5000):
        delay = limiter.when("a")
    assert delay == 1000.0
    uncapped = ItemExponentialFailureRateLimiter(1e300, math.inf)
    delays = [uncapped.when("x") for _ in range(2000)]
    assert delays[0] == 1e300
    assert delays[-1] == math.inf, "a float overflow saturates instead of raising"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base": -1.0, "max_delay": 1.0}, "base"),
        ({"base": 1.0, "max_delay": math.nan}, "max_delay"),
    ],
)
def test_exponential_rejects_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ItemExponentialFailureRateLimiter(**kwargs)


def test_fast_slow() -> None:
    limiter = ItemFastSlowRateLimiter(0.1, 5.0, 3)
    assert [limiter.when("a") for _ in range(5)] == [0.1, 0.1, 0.1, 5.0, 5.0]
    assert limiter.num_requeues("a") == 5
    assert limiter.when("b") == 0.1
    limiter.forget("a")
    assert limiter.when("a") == 0.1


def test_fast_slow_rejects_bad_attempts() -> None:
    with pytest.raises(ValueError, match="max_fast_attempts"):
        ItemFastSlowRateLimiter(0.1, 1.0, -1)


def test_bucket_reserves_linearly_growing_delays() -> None:
    clock = FakeClock(1000.0)
    bucket = BucketRateLimiter(10.0, 3, clock=clock)
    delays = [bucket.when(i) for i in range(6)]
    assert delays[:3] == [0.0, 0.0, 0.0], "the bucket starts full"
    assert delays[3:] == pytest.approx([0.1, 0.2, 0.3])
    assert bucket.tokens == pytest.approx(-3.0)


def test_bucket_refills_with_time_up_to_burst() -> None:
    clock = FakeClock()
    bucket = BucketRateLimiter(10.0, 2, clock=clock)
    for i in range(4):
        bucket.when(i)  # tokens: 2 -> -2
    clock.now += 0.25  # +2.5 tokens -> 0.5
    assert bucket.when("x") == pytest.approx(0.05)
    clock.now += 3600  # refill is capped at burst
    assert [bucket.when(i) for i in range(3)] == pytest.approx([0.0, 0.0, 0.1])


def test_bucket_ignores_backwards_clock() -> None:
    clock = FakeClock(10.0)
    bucket = BucketRateLimiter(1.0, 1, clock=clock)
    assert bucket.when("a") == 0.0
    clock.now = 5.0
    assert bucket.when("b") == pytest.approx(1.0)


def test_bucket_is_not_per_item() -> None:
    bucket = BucketRateLimiter(1.0, 1, clock=FakeClock())
    bucket.when("a")
    bucket.forget("a")
    assert bucket.num_requeues("a") == 0
    assert bucket.when("a") == pytest.approx(1.0), "forget does not refill the bucket"


def test_bucket_infinite_rate_never_waits() -> None:
    bucket = BucketRateLimiter(math.inf, 1, clock=FakeClock())
    assert [bucket.when(i) for i in range(100)] == [0.0] * 100


@pytest.mark.parametrize(
    ("qps", "burst", "match"),
    [(0.0, 1, "qps"), (-1.0, 1, "qps"), (math.nan, 1, "qps"), (1.0, 0, "burst")],
)
def test_bucket_rejects_bad_arguments(qps: float, burst: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BucketRateLimiter(qps, burst)


def test_max_of_calls_every_limiter() -> None:
    slow, fast = Recording(2.0, requeues=1), Recording(0.5, requeues=4)
    limiter = MaxOfRateLimiter(slow, fast)
    assert limiter.when("a") == 2.0
    assert slow.whens == ["a"]
    assert fast.whens == ["a"], "the dominated limiter still advances"
    assert limiter.num_requeues("a") == 4
    limiter.forget("a")
    assert slow.forgotten == fast.forgotten == ["a"]


def test_max_of_spends_bucket_tokens_while_exponential_dominates() -> None:
    clock = FakeClock()
    bucket = BucketRateLimiter(10.0, 2, clock=clock)
    limiter = MaxOfRateLimiter(ItemExponentialFailureRateLimiter(1.0, 100.0), bucket)
    for item in ("a", "b", "c"):
        assert limiter.when(item) == 1.0
    assert bucket.tokens == pytest.approx(-1.0)


def test_max_of_needs_a_limiter() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MaxOfRateLimiter[str]()


def test_with_max_wait_clamps_and_forwards() -> None:
    inner = ItemExponentialFailureRateLimiter(1.0, 1000.0)
    limiter = WithMaxWaitRateLimiter(inner, 3.0)
    assert [limiter.when("a") for _ in range(4)] == [1.0, 2.0, 3.0, 3.0]
    assert limiter.num_requeues("a") == 4
    limiter.forget("a")
    assert inner.num_requeues("a") == 0


def test_jitter_is_deterministic_with_a_seeded_source() -> None:
    rng = random.Random(7)
    expected = random.Random(7)
    limiter = JitterRateLimiter(ItemFastSlowRateLimiter(1.0, 1.0, 0), 0.5, rng=rng.random)
    for _ in range(5):
        assert limiter.when("a") == 1.0 + expected.random() * 0.5
    assert limiter.num_requeues("a") == 5
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0


@given(st.floats(0.0, 1.0, exclude_max=True), st.floats(0.0, 10.0), st.floats(0.0, 100.0))
def test_jitter_bounds(draw: float, factor: float, delay: float) -> None:
    limiter = JitterRateLimiter(Recording(delay), factor, rng=lambda: draw)
    jittered = limiter.when("a")
    assert delay <= jittered <= delay * (1 + factor)


def test_default_controller_rate_limiter() -> None:
    clock = FakeClock()
    limiter: RateLimiter[str] = default_controller_rate_limiter(clock=clock)
    assert [limiter.when("a") for _ in range(3)] == [0.005, 0.01, 0.02]
    # 97 more tokens empty the burst of 100; then the 10 qps bucket dominates small backoffs.
    for i in range(97):
        limiter.when(f"k{i}")
    assert limiter.when("fresh") == pytest.approx(0.1)
    assert limiter.num_requeues("a") == 3


@given(st.lists(st.floats(0.0, 5.0), max_size=40), st.integers(1, 5), st.floats(0.5, 50.0))
def test_bucket_delay_never_exceeds_backlog(gaps: list[float], burst: int, qps: float) -> None:
    """Each reservation waits exactly for the tokens owed before it, never more."""
    clock = FakeClock()
    bucket = BucketRateLimiter(qps, burst, clock=clock)
    for gap in gaps:
        clock.now += gap
        delay = bucket.when("x")
        assert delay >= 0
        assert delay == pytest.approx(max(0.0, -bucket.tokens / qps))
        assert bucket.tokens <= burst - 1

"""Rate limiters that decide how long a work-queue item waits before its next attempt.

Ports of client-go's ``util/workqueue/default_rate_limiters.go`` (see
docs/sync/workqueue.md): a :class:`RateLimiter` answers ``when(item)`` with a delay in seconds
and remembers per-item failures until ``forget(item)``. ``when`` has side effects (a failure
is counted, a bucket token is reserved), so call it exactly once per retry.

Hand-written because no maintained Python library offers these *reservation* semantics:
``aiolimiter`` and friends block the caller until a token is free, whereas a work queue needs
"how long should this item wait?" as a number, with tokens allowed to go negative like
``golang.org/x/time/rate``'s ``Reserve().Delay()``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

__all__ = [
    "BucketRateLimiter",
    "ItemExponentialFailureRateLimiter",
    "ItemFastSlowRateLimiter",
    "JitterRateLimiter",
    "MaxOfRateLimiter",
    "RateLimiter",
    "WithMaxWaitRateLimiter",
    "default_controller_rate_limiter",
    "loop_or_monotonic_time",
]

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)


class RateLimiter(Protocol[K_contra]):
    """How long an item should wait before it is retried.

    Implementations are used from one event loop thread and need no locking.
    """

    def when(self, item: K_contra) -> float:
        """Count one more retry of ``item`` and return how many seconds it should wait."""
        ...

    def forget(self, item: K_contra) -> None:
        """Drop what is remembered about ``item`` (call it on success or permanent failure)."""
        ...

    def num_requeues(self, item: K_contra) -> int:
        """How many times ``item`` has been retried since it was last forgotten."""
        ...


def _check_delay(name: str, value: float) -> float:
    if not isinstance(value, int | float) or math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, got {value!r}")
    return float(value)


def loop_or_monotonic_time() -> float:
    """The running event loop's clock, or ``time.monotonic()`` outside a loop.

    The default asyncio loop's clock *is* ``time.monotonic()``, so the two agree in production,
    while a fake loop clock (``looptime``) is honoured in tests without any wiring.
    """
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class ItemExponentialFailureRateLimiter:
    """``base * 2**failures`` per item, capped at ``max_delay``.

    The first retry waits ``base``, the second ``2 * base`` and so on; the exponent is clamped
    before it is computed, so a long-failing item can never overflow.
    """

    def __init__(self, base: float, max_delay: float) -> None:
        self._base = _check_delay("base", base)
        self._max = _check_delay("max_delay", max_delay)
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        """Return ``min(base * 2**n, max_delay)`` for the n-th retry (n from 0) of ``item``."""
        exp = self._failures.get(item, 0)
        self._failures[item] = exp + 1
        # 2.0**1024 overflows a float; anything that large is past any sane cap anyway.
        if exp >= 1024:
            return self._max
        return min(self._base * 2.0**exp, self._max)

    def forget(self, item: Hashable) -> None:
        """Reset ``item``'s failure count."""
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        """Failures of ``item`` since it was last forgotten."""
        return self._failures.get(item, 0)


class ItemFastSlowRateLimiter:
    """``fast`` for the first ``max_fast_attempts`` retries of an item, ``slow`` afterwards."""

    def __init__(self, fast: float, slow: float, max_fast_attempts: int) -> None:
        self._fast = _check_delay("fast", fast)
        self._slow = _check_delay("slow", slow)
        if not isinstance(max_fast_attempts, int) or max_fast_attempts < 0:
            raise ValueError(
                f"max_fast_attempts must be a non-negative int, got {max_fast_attempts!r}"
            )
        self._max_fast = max_fast_attempts
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        """Count a retry of ``item``; ``fast`` while within ``max_fast_attempts``, else ``slow``."""
        n = self._failures.get(item, 0) + 1
        self._failures[item] = n
        return self._fast if n <= self._max_fast else self._slow

    def forget(self, item: Hashable) -> None:
        """Reset ``item``'s attempt count."""
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        """Attempts of ``item`` since it was last forgotten."""
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """A global token bucket (``qps`` tokens per second, at most ``burst``) with reservations.

    Like ``golang.org/x/time/rate``'s ``Limiter.Reserve().Delay()``: every ``when`` takes a
    token *now*, even when none is left, and returns how long the caller must wait for that
    token to exist. The bucket may go negative, so a burst beyond capacity gets linearly
    growing delays (``1/qps``, ``2/qps``, ...) instead of a refusal. It is not per item:
    ``forget`` does nothing and ``num_requeues`` is always 0.

    ``clock`` returns seconds; by default the running loop's clock (``time.monotonic()``
    outside a loop). The bucket starts full.
    """

    def __init__(
        self, qps: float, burst: int, *, clock: Callable[[], float] = loop_or_monotonic_time
    ) -> None:
        if not isinstance(qps, int | float) or math.isnan(qps) or qps <= 0:
            raise ValueError(f"qps must be a positive number (math.inf allowed), got {qps!r}")
        if not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an int >= 1, got {burst!r}")
        self._qps = float(qps)
        self._burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last: float | None = None

    @property
    def tokens(self) -> float:
        """Tokens left after the last reservation (negative when reservations are queued)."""
        return self._tokens

    def when(self, item: Hashable) -> float:
        """Reserve one token and return the seconds until it is available (0 if now)."""
        if math.isinf(self._qps):
            return 0.0
        now = self._clock()
        last = self._last
        if last is None or now < last:
            # A clock that goes backwards is treated like x/time/rate does: no refill.
            last = now
        self._tokens = min(self._burst, self._tokens + (now - last) * self._qps)
        self._last = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self._qps

    def forget(self, item: Hashable) -> None:
        """Nothing to forget: the bucket is shared by all items."""

    def num_requeues(self, item: Hashable) -> int:
        """Always 0: the bucket does not track items."""
        return 0


class MaxOfRateLimiter(Generic[K]):
    """The longest delay of several limiters.

    Every limiter's ``when`` is called on every retry, so all of them advance (the bucket spends
    a token even while the exponential limiter dominates, exactly as client-go does).
    """

    def __init__(self, *limiters: RateLimiter[K]) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self._limiters = limiters

    def when(self, item: K) -> float:
        """Call every limiter's ``when`` and return the largest delay."""
        return max([limiter.when(item) for limiter in self._limiters])

    def forget(self, item: K) -> None:
        """Forget ``item`` in every limiter."""
        for limiter in self._limiters:
            limiter.forget(item)

    def num_requeues(self, item: K) -> int:
        """The largest retry count any limiter holds for ``item``."""
        return max(limiter.num_requeues(item) for limiter in self._limiters)


class WithMaxWaitRateLimiter(Generic[K]):
    """Another limiter with its delays clamped to ``max_wait`` seconds."""

    def __init__(self, limiter: RateLimiter[K], max_wait: float) -> None:
        self._limiter = limiter
        self._max_wait = _check_delay("max_wait", max_wait)

    def when(self, item: K) -> float:
        """The wrapped limiter's delay, at most ``max_wait``."""
        return min(self._limiter.when(item), self._max_wait)

    def forget(self, item: K) -> None:
        """Forward to the wrapped limiter."""
        self._limiter.forget(item)

    def num_requeues(self, item: K) -> int:
        """Forward to the wrapped limiter."""
        return self._limiter.num_requeues(item)


class JitterRateLimiter(Generic[K]):
    """Another limiter with random extra delay, so retries after a shared outage spread out.

    Like Go's ``wait.Jitter``: ``delay + rng() * factor * delay``, where ``rng`` returns a float in
    ``[0, 1)`` (inject a seeded ``random.Random().random`` for deterministic tests). client-go has
    no jitter; this is an addition (see primitives.md 1.9).
    """

    def __init__(
        self,
        limiter: RateLimiter[K],
        factor: float,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._limiter = limiter
        self._factor = _check_delay("factor", factor)
        self._rng = rng

    def when(self, item: K) -> float:
        """The wrapped limiter's delay, stretched by up to ``factor`` of itself."""
        delay = self._limiter.when(item)
        # Clamped: with rng() just below 1, rounding could put the sum an ulp past the bound.
        return min(delay + self._rng() * self._factor * delay, delay * (1 + self._factor))

    def forget(self, item: K) -> None:
        """Forward to the wrapped limiter."""
        self._limiter.forget(item)

    def num_requeues(self, item: K) -> int:
        """Forward to the wrapped limiter."""
        return self._limiter.num_requeues(item)


def default_controller_rate_limiter(
    *, clock: Callable[[], float] = loop_or_monotonic_time
) -> MaxOfRateLimiter[Hashable]:
    """client-go's ``DefaultControllerRateLimiter``.

    Per-item exponential backoff from 5 ms to 1000 s, combined with a global 10 qps bucket
    (burst 100) so that many failing items cannot stampede together.
    """
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000.0),
        BucketRateLimiter(10.0, 100, clock=clock),
    )

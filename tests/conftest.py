"""Test-wide settings.

Hypothesis runs without per-example deadlines: CI machines are noisy and a timing is never a
test verdict here. Async tests run under pytest-asyncio (auto mode); tests that wait on time use
``@pytest.mark.looptime`` so the loop's clock is fake and jumps forward instead of sleeping.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    print_blob=True,
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

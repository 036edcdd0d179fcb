from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cronloop.api.phase import TERMINAL_PHASES, Phase, PhaseRegression, advance, can_advance


def test_happy_path_advances() -> None:
    phase = Phase.PENDING
    for nxt in (Phase.PREPARING, Phase.PREPARED, Phase.RUNNING, Phase.SUCCEEDED):
        phase = advance(phase, nxt)
    assert phase is Phase.SUCCEEDED


def test_seed000_regression_is_refused() -> None:
    with pytest.raises(PhaseRegression, match="from Succeeded to Prepared"):
        advance(Phase.SUCCEEDED, Phase.PREPARED)


def test_terminal_is_final() -> None:
    for a in TERMINAL_PHASES:
        for b in Phase:
            assert can_advance(a, b) == (a == b)


@given(st.lists(st.sampled_from(list(Phase)), max_size=30))
def test_rank_never_decreases(proposals: list[Phase]) -> None:
    phase = Phase.PENDING
    for p in proposals:
        before = phase
        if can_advance(phase, p):
            phase = p
        assert phase.rank >= before.rank
        if before.terminal:
            assert phase == before

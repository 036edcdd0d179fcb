"""Aggregation of sub-job phases into a job phase: rules, monotonicity, order independence."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cronloop.api.aggregate import aggregate_phase
from cronloop.api.job import SuccessMode, SuccessPolicy
from cronloop.api.phase import TERMINAL_PHASES, Phase, can_advance

P, A, B, C, D = Phase.PENDING, Phase.PREPARING, Phase.PREPARED, Phase.RUNNING, Phase.SUCCEEDED
F, X, T, L, S = Phase.FAILED, Phase.CANCELLED, Phase.TIMED_OUT, Phase.LOST, Phase.SKIPPED
ALL = SuccessPolicy(mode=SuccessMode.ALL)
ANY = SuccessPolicy(mode=SuccessMode.ANY)


def at_least(n: int) -> SuccessPolicy:
    return SuccessPolicy(mode=SuccessMode.AT_LEAST, n=n)


@pytest.mark.parametrize(
    ("policy", "phases", "expected"),
    [
        (ALL, [D, D, D], D),
        (ALL, [D, D, C], C),
        (ALL, [D, F, C], F),  # success impossible before the last one finishes
        (ALL, [D, X, P], F),  # any non-success terminal counts as a failure
        (ANY, [C, D, P], D),  # one success is enough, others may still run
        (ANY, [F, F, C], C),
        (ANY, [F, T, L], F),
        (at_least(2), [D, F, C], C),
        (at_least(2), [D, F, S], F),
        (at_least(2), [D, D, P], D),
        (ALL, [P, P], P),
        (ALL, [P, A], A),  # the furthest sub-job sets the pace
        (ALL, [B, P, A], B),
        (ALL, [C, P], C),
        (ANY, [F, P], C),  # a finished sub-job means work has run
        (ALL, [D], D),
        (ALL, [X], F),
    ],
)
def test_rules(policy: SuccessPolicy, phases: list[Phase], expected: Phase) -> None:
    assert aggregate_phase(policy, phases, Phase.PENDING) is expected


def test_never_below_previous() -> None:
    assert aggregate_phase(ALL, [P, P], C) is C
    assert aggregate_phase(ALL, [F, P], D) is D  # terminal previous is final
    assert aggregate_phase(ALL, [D, D], F) is F
    assert aggregate_phase(ALL, [], B) is B  # nothing known yet


def test_at_least_more_than_sub_jobs_fails() -> None:
    assert aggregate_phase(at_least(3), [C, C], P) is F


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[SuccessPolicy, list[list[Phase]]]:
    """A policy and, per sub-job, the forward path of phases it reports."""
    n = draw(st.integers(min_value=1, max_value=5))
    mode = draw(st.sampled_from(list(SuccessMode)))
    policy = SuccessPolicy(
        mode=mode,
        n=draw(st.integers(min_value=1, max_value=n)) if mode is SuccessMode.AT_LEAST else None,
    )
    paths = []
    for _ in range(n):
        steps = draw(st.lists(st.sampled_from([A, B, C]), max_size=3, unique=True))
        end = draw(st.sampled_from(sorted(TERMINAL_PHASES)))
        paths.append([*sorted(steps, key=lambda p: p.rank), end])
    return policy, paths


def _interleave(
    paths: list[list[Phase]], order: list[int], redeliver: list[tuple[int, int]]
) -> list[tuple[int, Phase]]:
    """Reports in an interleaving, each path in order, plus stale re-deliveries of old ones."""
    cursors = [0] * len(paths)
    reports: list[tuple[int, Phase]] = []
    for pick in order:
        alive = [i for i, path in enumerate(paths) if cursors[i] < len(path)]
        if not alive:
            break
        i = alive[pick % len(alive)]
        reports.append((i, paths[i][cursors[i]]))
        cursors[i] += 1
    for i, path in enumerate(paths):  # drain the rest in sub-job order
        reports.extend((i, phase) for phase in path[cursors[i] :])
    for source, offset in redeliver:
        # a copy of an earlier report arrives again, somewhere after the original
        original = source % len(reports)
        position = original + 1 + offset % (len(reports) - original)
        reports.insert(position, reports[original])
    return reports


def _run(
    policy: SuccessPolicy, n: int, reports: list[tuple[int, Phase]], *, guarded: bool
) -> list[Phase]:
    sub = [P] * n
    job = P
    seen = [job]
    for i, phase in reports:
        if guarded:
            if can_advance(sub[i], phase):
                sub[i] = phase
        else:
            sub[i] = phase  # last writer wins: the seed-000 bug at the sub-job level
        job = aggregate_phase(policy, sub, job)
        seen.append(job)
    return seen


@given(
    scenario=scenarios(),
    order=st.lists(st.integers(min_value=0, max_value=10), max_size=25),
    redeliver=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=6),
    guarded=st.booleans(),
)
def test_job_phase_is_monotonic_under_any_report_order(
    scenario: tuple[SuccessPolicy, list[list[Phase]]],
    order: list[int],
    redeliver: list[tuple[int, int]],
    guarded: bool,
) -> None:
    policy, paths = scenario
    seen = _run(policy, len(paths), _interleave(paths, order, redeliver), guarded=guarded)
    for before, after in itertools.pairwise(seen):
        assert after.rank >= before.rank
        if before.terminal:
            assert after is before


@given(
    scenario=scenarios(),
    order_a=st.lists(st.integers(min_value=0, max_value=10), max_size=25),
    order_b=st.lists(st.integers(min_value=0, max_value=10), max_size=25),
    redeliver=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=6),
)
def test_final_phase_is_order_independent(
    scenario: tuple[SuccessPolicy, list[list[Phase]]],
    order_a: list[int],
    order_b: list[int],
    redeliver: list[tuple[int, int]],
) -> None:
    policy, paths = scenario
    n = len(paths)
    final_a = _run(policy, n, _interleave(paths, order_a, []), guarded=True)[-1]
    final_b = _run(policy, n, _interleave(paths, order_b, redeliver), guarded=True)[-1]
    assert final_a is final_b
    assert final_a.terminal
    assert final_a is aggregate_phase(policy, [path[-1] for path in paths], P)


def test_seed000_b_d_d_b_never_regresses() -> None:
    # Two sub-jobs each report Prepared (B) then Succeeded (D); the handlers race, so the job
    # saw B, D, D, B. Every interleaving of the four reports must leave the job Succeeded and
    # never move it back, even if the sub-job records are last-writer-wins.
    reports = [(0, B), (1, D), (0, D), (1, B)]
    for perm in itertools.permutations(reports):
        guarded = _run(ALL, 2, list(perm), guarded=True)
        assert guarded[-1] is D
        for seen in (guarded, _run(ALL, 2, list(perm), guarded=False)):
            assert all(b.rank >= a.rank for a, b in itertools.pairwise(seen))
    raw = _run(ALL, 2, [(0, B), (1, D), (0, D), (1, B)], guarded=False)
    assert raw == [P, B, C, D, D]

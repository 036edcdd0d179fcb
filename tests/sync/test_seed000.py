"""Seed 000: the out-of-order status bug is reproduced deterministically, then shown fixed.

Also a property test of the fix's foundation: a KeyedLooper fed from several threads keeps each
poster's order per key and never runs two handlers of one key at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronloop.api.phase import Phase, can_advance
from cronloop.demos.seed000 import (
    JOBS,
    SimulationResult,
    find_regressing_seed,
    main,
    run_scenario,
)
from cronloop.sync.keyed import KeyedLooper

SEEDS = range(200)
#: A seed whose naive run regresses through concurrency alone (no redelivered report).
KNOWN_SEED = 0


def _assert_monotonic(result: SimulationResult) -> None:
    for job in JOBS:
        timeline = result.timeline(job)
        for before, after in zip((Phase.PENDING, *timeline), timeline, strict=False):
            assert can_advance(before, after), (result.seed, job, timeline)


async def test_the_naive_handlers_regress_for_a_known_seed() -> None:
    result = await run_scenario(KNOWN_SEED, fixed=False)
    assert result.regressed
    regression = result.regressions[0]
    assert not regression.report.redelivered  # the race alone did it
    timeline = result.timeline(regression.job)
    index = [w for w in result.writes if w.job == regression.job].index(regression)
    assert timeline[index].rank < max(p.rank for p in timeline[:index])


async def test_the_simulation_is_deterministic() -> None:
    for fixed in (False, True):
        first = await run_scenario(KNOWN_SEED, fixed=fixed)
        second = await run_scenario(KNOWN_SEED, fixed=fixed)
        assert first == second


async def test_the_naive_handlers_regress_for_many_seeds() -> None:
    results = [await run_scenario(seed, fixed=False) for seed in SEEDS]
    regressed = [r for r in results if r.regressed]
    by_race = [r for r in regressed if not all(w.report.redelivered for w in r.regressions)]
    assert len(regressed) >= len(SEEDS) // 4
    assert len(by_race) >= len(SEEDS) // 5


async def test_the_fixed_handlers_never_regress() -> None:
    for seed in SEEDS:
        result = await run_scenario(seed, fixed=True)
        assert not result.regressed, seed
        _assert_monotonic(result)
        assert dict(result.final) == dict.fromkeys(JOBS, Phase.SUCCEEDED), seed
        assert all(r.redelivered for r in result.ignored), seed


async def test_the_public_entry_points_run_in_their_own_loop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with asyncio.timeout(30):
        harmless = 2
        assert not (await run_scenario(harmless, fixed=False)).regressed
        assert await asyncio.to_thread(find_regressing_seed, harmless) > harmless
        await asyncio.to_thread(main, harmless)
    out = capsys.readouterr().out
    assert f"Seed {harmless} happens to interleave harmlessly" in out
    assert "backwards write(s)" in out
    assert "Fixed run never regressed." in out


POSTS = st.lists(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), max_size=40),
    min_size=2,
    max_size=4,
)


@settings(max_examples=40)
@given(plan=POSTS, workers=st.integers(1, 4), batch_size=st.integers(1, 5))
async def test_keyed_looper_keeps_per_key_order_across_threads(
    plan: list[list[tuple[int, int]]], workers: int, batch_size: int
) -> None:
    active: dict[int, int] = defaultdict(int)
    overlaps: list[int] = []
    ran: dict[int, list[tuple[int, int]]] = defaultdict(list)

    async def handler(key: int, poster: int, index: int, yields: int) -> None:
        active[key] += 1
        if active[key] > 1:
            overlaps.append(key)
        for _ in range(yields):
            await asyncio.sleep(0)
        ran[key].append((poster, index))
        active[key] -= 1

    async with KeyedLooper[int](workers=workers, batch_size=batch_size) as looper:
        barrier = threading.Barrier(len(plan))

        def post_all(poster: int) -> None:
            barrier.wait(timeout=10)
            for index, (key, yields) in enumerate(plan[poster]):
                looper.post(key, handler, key, poster, index, yields)

        threads = [threading.Thread(target=post_all, args=(p,)) for p in range(len(plan))]
        for thread in threads:
            thread.start()
        async with asyncio.timeout(30):
            for thread in threads:
                await asyncio.to_thread(thread.join, 10)
            await looper.wait_idle()
        assert not any(thread.is_alive() for thread in threads)
    assert overlaps == []
    for key, runs in ran.items():
        for poster in range(len(plan)):
            mine = [index for p, index in runs if p == poster]
            expected = [i for i, (k, _) in enumerate(plan[poster]) if k == key]
            assert mine == expected, (key, poster)
    assert sum(len(r) for r in ran.values()) == sum(len(p) for p in plan)

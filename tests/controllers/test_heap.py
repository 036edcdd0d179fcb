"""The collector policy (controllers.heap): young objects collected or frozen from the loop,
cycles frozen by a skipped tick found by the growth-driven full collection, the process's
collector given back as it was."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from cronloop.api import Phase
from cronloop.controllers import MAX_CAPPED, MAX_SCAN, MAX_UNSCANNED, HeapKeeper

from .harness import running_stack
from .test_e2e_inline import FANOUT


class _Node:
    """A container the collector tracks; ``link`` makes cycles."""

    def __init__(self) -> None:
        self.link: object = None


def _dropped_cycle() -> weakref.ref[_Node]:
    """A two-node cycle nothing refers to any more (only the collector can free it)."""
    a, b = _Node(), _Node()
    a.link, b.link = b, a
    return weakref.ref(a)


def _live(n: int) -> list[list[int]]:
    """``n`` tracked containers kept alive by the caller."""
    return [[i] for i in range(n)]


@pytest.fixture
def keeper() -> Iterator[HeapKeeper]:
    keeper = HeapKeeper(full_growth=1e-4)
    try:
        yield keeper
    finally:
        keeper.release()


def test_settle_takes_over_and_release_gives_the_collector_back() -> None:
    thresholds = gc.get_threshold()
    assert gc.isenabled()
    keeper = HeapKeeper()
    keeper.settle()
    try:
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0
    finally:
        keeper.release()
    assert not keeper.settled
    assert gc.isenabled()
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() == 0
    keeper.release()  # a second release changes nothing
    assert gc.isenabled()


def test_release_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        keeper = HeapKeeper()
        keeper.settle()
        keeper.release()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_nothing_happens_before_settle(keeper: HeapKeeper) -> None:
    keeper.tick()
    assert keeper.upkeep() is False
    assert keeper.young_collections == keeper.young_frozen == 0
    assert gc.get_freeze_count() == 0


def test_every_tick_empties_the_young_generation_whatever_its_counter(
    keeper: HeapKeeper,
) -> None:
    old = _live(5_000)
    keeper.settle()  # ``old`` is frozen now
    young = _live(3_000)
    del old  # frozen objects freed: the counter goes down, the young list does not
    assert gc.get_count()[0] < len(young)
    frozen = gc.get_freeze_count()
    keeper.tick()
    assert keeper.young_collections == 1
    assert gc.get_freeze_count() >= frozen + len(young)


def test_a_tick_collects_young_cycles_and_freezes_the_survivors(keeper: HeapKeeper) -> None:
    keeper.settle()
    frozen = gc.get_freeze_count()
    cycle = _dropped_cycle()
    kept = _live(1_000)
    assert cycle() is not None  # automatic collection is off
    keeper.tick()
    assert cycle() is None
    assert keeper.young_collections == 1
    assert keeper.young_collected >= 2
    # The survivors are frozen: no later collection scans them again.
    assert gc.get_freeze_count() >= frozen + len(kept)
    assert gc.get_count()[0] < len(kept)


def test_clean_collections_let_ticks_freeze_unscanned_and_upkeep_finds_what_they_froze(
    keeper: HeapKeeper,
) -> None:
    keeper.settle()
    assert keeper.upkeep() is False  # the first upkeep takes the heap as it is
    kept = [_live(1_000)]
    keeper.tick()  # finds next to no garbage: the next tick freezes without scanning
    assert (keeper.young_collections, keeper.young_frozen) == (1, 0)
    cycle = _dropped_cycle()
    kept.append(_live(5_000))
    keeper.tick()
    assert (keeper.young_collections, keeper.young_frozen) == (1, 1)
    assert cycle() is not None  # frozen with the rest, not collected
    for _ in range(3):  # grow beyond the full collection's slack
        kept.append(_live(5_000))
        keeper.tick()
    # The permanent generation grew beyond the policy's share: one full collection.
    assert keeper.upkeep() is True
    assert cycle() is None
    assert keeper.full_collections == 1
    assert keeper.full_collected >= 2
    assert keeper.upkeep() is False  # no growth since
    assert sum(len(part) for part in kept) == 21_000


def test_skipped_ticks_double_while_collections_stay_clean() -> None:
    keeper = HeapKeeper(max_skip=4)
    keeper.settle()
    try:
        kept = []
        pattern = []
        for _ in range(14):
            kept.append(_live(1_000))
            before = keeper.young_collections
            keeper.tick()
            pattern.append("C" if keeper.young_collections > before else "f")
        # 1, 2, then 4 (the bound) unscanned ticks after each clean collection.
        assert "".join(pattern) == "CfCffCffffCfff"
    finally:
        keeper.release()


def test_a_collection_that_finds_garbage_brings_back_a_collection_every_tick(
    keeper: HeapKeeper,
) -> None:
    keeper.settle()
    kept = [_live(1_000)]
    keeper.tick()  # clean: the next tick freezes unscanned
    kept.append(_live(1_000))
    keeper.tick()
    assert (keeper.young_collections, keeper.young_frozen) == (1, 1)
    # The skip is used up: this tick collects, and finds a lot of garbage.
    cycles = [_dropped_cycle() for _ in range(400)]
    keeper.tick()
    assert keeper.young_collections == 2
    assert all(cycle() is None for cycle in cycles)
    # So the very next tick collects again instead of freezing.
    again = [_dropped_cycle() for _ in range(400)]
    keeper.tick()
    assert (keeper.young_collections, keeper.young_frozen) == (3, 1)
    assert all(cycle() is None for cycle in again)


def test_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="garbage_share"):
        HeapKeeper(garbage_share=1.5)
    with pytest.raises(ValueError, match="max_skip"):
        HeapKeeper(max_skip=-1)
    with pytest.raises(ValueError, match="full_growth"):
        HeapKeeper(full_growth=0)


@pytest.mark.looptime(start=0)
async def test_a_tuned_manager_paces_the_collector_while_it_runs(tmp_path: Path) -> None:
    async with running_stack(tmp_path, tune_gc=True, resync_period=5.0) as stack:
        heap = stack.manager.heap
        assert heap is not None
        assert not gc.isenabled()  # settled once the cache was loaded
        await stack.apply(FANOUT)

        async def paced() -> bool:
            jobs = await stack.jobs("report")
            done = sum(1 for j in jobs if j.status.phase is Phase.SUCCEEDED)
            return done >= 3 and heap.young_collections + heap.young_frozen > 0

        await stack.wait_for(paced, within=300)
    assert not heap.settled
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_growth_before_the_first_upkeep_is_not_counted(keeper: HeapKeeper) -> None:
    keeper.settle()
    started = _live(20_000)  # what start-up adds: live, not garbage
    keeper.tick()
    assert keeper.upkeep() is False
    assert keeper.upkeep() is False
    more = _live(20_000)
    keeper.tick()
    assert keeper.upkeep() is True
    assert keeper.full_collections == 1
    assert len(started) + len(more) == 40_000


def test_a_skipped_tick_still_scans_when_many_objects_were_made(keeper: HeapKeeper) -> None:
    keeper.settle()
    kept = _live(1_000)
    keeper.tick()  # clean: the next tick would freeze unscanned
    assert keeper.young_collections == 1
    # A job starts making cycles in earnest: they stay counted, as nothing frees them.
    cycles = [_dropped_cycle() for _ in range(MAX_UNSCANNED)]
    keeper.tick()
    assert keeper.young_collections == 2
    assert keeper.young_frozen == 0
    assert all(cycle() is None for cycle in cycles)
    assert len(kept) == 1_000


def test_a_busy_process_making_the_usual_amount_keeps_skipping(keeper: HeapKeeper) -> None:
    keeper.settle()
    usual = MAX_UNSCANNED + 1_000  # a burst of runs: more than MAX_UNSCANNED every tick
    kept = [_live(usual)]
    keeper.tick()
    assert keeper.young_collections == 1
    kept.append(_live(usual))
    keeper.tick()  # as many as at the collection: frozen unscanned
    assert (keeper.young_collections, keeper.young_frozen) == (1, 1)
    keeper.tick()  # the skip was used up: collects, clean, skips 2 next
    far_beyond = MAX_SCAN - 1_000  # more than four times the usual, still small to scan
    assert far_beyond > 4 * (usual + 500)
    kept.append(_live(far_beyond))
    keeper.tick()
    assert keeper.young_collections == 3
    assert sum(len(part) for part in kept) == 2 * usual + far_beyond


def test_a_young_generation_too_large_to_scan_is_frozen_and_the_next_tick_scans(
    keeper: HeapKeeper,
) -> None:
    keeper.settle()
    kept = [_live(MAX_SCAN + 1_000)]  # the loop was away: one long turn made all of these
    frozen_cycle = _dropped_cycle()
    keeper.tick()
    assert (keeper.young_collections, keeper.young_frozen) == (0, 1)
    assert frozen_cycle() is not None
    # The next tick holds the usual amount: it is scanned, whatever the skip said before.
    kept.append(_live(1_000))
    young_cycle = _dropped_cycle()
    keeper.tick()
    assert (keeper.young_collections, keeper.young_frozen) == (1, 1)
    assert young_cycle() is None
    assert frozen_cycle() is not None  # left to the growth-driven full collection
    assert keeper.upkeep() is False  # the first upkeep takes the heap as it is


def test_large_young_generations_go_unscanned_only_a_few_ticks_in_a_row(
    keeper: HeapKeeper,
) -> None:
    keeper.settle()
    kept = []
    for _ in range(MAX_CAPPED):
        kept.append(_live(MAX_SCAN + 1_000))
        keeper.tick()
    assert (keeper.young_collections, keeper.young_frozen) == (0, MAX_CAPPED)
    kept.append(_live(MAX_SCAN + 1_000))
    cycle = _dropped_cycle()
    keeper.tick()  # one more: scanned however large
    assert (keeper.young_collections, keeper.young_frozen) == (1, MAX_CAPPED)
    assert cycle() is None
    kept.append(_live(MAX_SCAN + 1_000))
    keeper.tick()  # the count starts again after a scan
    assert (keeper.young_collections, keeper.young_frozen) == (1, MAX_CAPPED + 1)
    assert sum(len(part) for part in kept) == (MAX_CAPPED + 2) * (MAX_SCAN + 1_000)


def test_the_policy_is_exposed_on_a_registry(keeper: HeapKeeper) -> None:
    registry = CollectorRegistry()
    keeper.register(registry)
    keeper.settle()
    kept = _live(1_000)
    cycle = _dropped_cycle()
    keeper.tick()  # a collection
    keeper.tick()  # frozen unscanned
    text = generate_latest(registry).decode()
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("cronloop_gc_")
    }
    assert values["cronloop_gc_young_collections_total"] == 1
    assert values["cronloop_gc_young_collected_objects_total"] >= 2
    assert values["cronloop_gc_frozen_ticks_total"] == 1
    assert values["cronloop_gc_full_collections_total"] == 0
    assert values["cronloop_gc_full_collected_objects_total"] == 0
    assert values["cronloop_gc_frozen_objects"] >= len(kept)
    assert cycle() is None

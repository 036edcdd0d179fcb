"""Garbage-collector policy for a scheduler process that keeps a large heap in memory.

A running manager holds every CronJob, Job and SubJob in its cache: long-lived objects, tens
of thousands of them, while thousands of runs a second add to them. CPython's generational
collector scans every young survivor again, and when an older generation fills it scans the
whole of it in one pause. Nearly everything a run leaves behind stays alive (its records in
the cache, until its history is pruned) or is freed by reference counting, not by the
collector: on a 10,000-run spread at 2,000 runs/s (``python -m bench.trigger_probe spread``)
young collections found about 150 objects in cycles in all, and a collection of everything
that survived them found 10. So the collector's scans are nearly all waste, and they land on
the runs due meanwhile: with the earlier policy (young threshold 50,000, default promotion)
young collections paused the loop 30-90 ms and older ones up to 300 ms, and took 5-7% of a
loop that the spread keeps busy; the spread's p99 lateness was 57-107 ms with it and
12-29 ms with the collector off (same machine, same sitting).

:class:`HeapKeeper` replaces the automatic collector with one paced from the event loop:

- :meth:`HeapKeeper.settle` (once the cache is loaded) collects once, freezes what is alive
  (:func:`gc.freeze`: the permanent generation, which collections skip) and turns automatic
  collection off;
- :meth:`HeapKeeper.tick` (every :data:`TICK_SECONDS`, from :meth:`HeapKeeper.run`) either
  collects the objects made since the last tick (a young collection of one tick's worth:
  a few thousand objects, a few milliseconds at 2,000 runs/s) and freezes the survivors, so
  nothing is scanned twice, or freezes them without a scan. Freezing costs nothing (it links
  one list into another), and every tick does one or the other, so the young generation never
  holds more than a tick's worth: its counter is no measure of that, since it also counts down
  for every frozen object freed (a run's records pruned): a young collection whose counter
  read 4,095 took 45 ms, under a first version that acted only above a count of 2,000. While
  collections keep finding next to no garbage (under :data:`GARBAGE_SHARE` of the objects
  made, and at least :data:`MIN_GARBAGE`), the following ticks freeze without scanning,
  doubling up to :data:`MAX_SKIP` ticks in a row, unless far more objects were made since the
  last tick than usual (:data:`MAX_UNSCANNED`); one collection that finds garbage (inline jobs that
  make cycles, say) brings back a collection every tick;
- a young generation of more than :data:`MAX_SCAN` objects is frozen unscanned, and the next
  tick scans (up to :data:`MAX_CAPPED` such ticks in a row). It holds that much only when the
  loop did not get to tick for a while, and its size is then no sign of cycles: at the start
  of a 10,000-run burst the loop decides thousands of runs before its next turn, and the
  young collection that followed scanned 290,000 objects in 80-110 ms (3-4% of the burst's
  loop), finding nothing. The next tick holds the usual amount, so it is the sample;
- cycles that are frozen and dropped later stay in the permanent generation.
  :meth:`HeapKeeper.upkeep` (called by the manager's resync) bounds them: when the permanent
  generation has doubled (:data:`FULL_GROWTH`) since the last full collection, it collects
  everything once (unfreeze, collect, freeze). That pause is long (every live object is
  scanned: with 100,000 CronJobs, the idle window that held one took 1.9 s more CPU), and
  what it finds is next to nothing (above: 10 objects after 10,000 runs), so it is rare: the
  first upkeep takes the heap as it is (start-up grows it, compiling every CronJob on its
  first pass, and none of that is garbage), and a cache that stops growing stops triggering
  it. CPython's own rule collects everything at a quarter's growth; the policy before this
  one never collected the frozen heap at all.

Hand-written because the standard library's knobs (thresholds, :func:`gc.freeze`) are the
only ones there are; this composes them. These are process-wide settings, so a library must
not choose them for its host: the manager applies them only when asked
(``Manager(tune_gc=True)``), which ``cronloop up`` does, and gives the process its previous
settings back when it stops (:meth:`HeapKeeper.release`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "FULL_GROWTH",
    "GARBAGE_SHARE",
    "MAX_CAPPED",
    "MAX_SCAN",
    "MAX_SKIP",
    "MAX_UNSCANNED",
    "MIN_GARBAGE",
    "TICK_SECONDS",
    "HeapKeeper",
]

logger = logging.getLogger(__name__)

#: How often the loop looks at the young objects.
TICK_SECONDS = 0.05
#: A young collection that finds less garbage than this share of the objects made since the
#: last tick (the collector's counter), or than :data:`MIN_GARBAGE`, lets the next ticks
#: freeze without scanning.
GARBAGE_SHARE = 0.01
MIN_GARBAGE = 20
#: At most this many ticks in a row freeze without scanning.
MAX_SKIP = 64
#: A tick that would freeze unscanned collects instead when the collector's counter says
#: more objects than this were made since the last tick, and more than :data:`_USUAL` times
#: what it said at the last collection: the counter may read low (frozen objects freed count
#: it down) but never high, so a job that starts making cycles in earnest is scanned at its
#: next tick. Relative too, because a burst of runs makes more than this every tick (a
#: 2,000 runs/s spread makes 3,000-7,000), and scanning all of it took 6% of a burst's loop.
MAX_UNSCANNED = 10_000
_USUAL = 4
#: A young generation larger than this is frozen without a scan (a scan of it would pause the
#: loop for some 15 ms or more), the next tick scanning instead, unless this happened
#: :data:`MAX_CAPPED` ticks in a row.
MAX_SCAN = 50_000
MAX_CAPPED = 4
#: Growth of the permanent generation, as a fraction of its size at the first upkeep or after
#: the last full collection, that makes :meth:`HeapKeeper.upkeep` collect everything.
FULL_GROWTH = 1.0
_FULL_SLACK = 10_000


class HeapKeeper:
    """The collector policy of one manager (see the module docstring)."""

    def __init__(
        self,
        *,
        garbage_share: float = GARBAGE_SHARE,
        max_skip: int = MAX_SKIP,
        full_growth: float = FULL_GROWTH,
    ) -> None:
        if not 0 <= garbage_share <= 1:
            raise ValueError(f"garbage_share: must be between 0 and 1, got {garbage_share}")
        if max_skip < 0:
            raise ValueError(f"max_skip: must be >= 0, got {max_skip}")
        if not full_growth > 0:
            raise ValueError(f"full_growth: must be > 0, got {full_growth}")
        self._garbage_share = garbage_share
        self._max_skip = max_skip
        self._full_growth = full_growth
        #: The collector's state before :meth:`settle`: (enabled, thresholds).
        self._saved: tuple[bool, tuple[int, ...]] | None = None
        #: The frozen heap at the first upkeep, then after each full collection.
        self._baseline: int | None = None
        self._skip = 0
        self._skip_left = 0
        #: Ticks in a row that froze a young generation too large to scan.
        self._capped = 0
        #: The collector's counter at the last young collection.
        self._made = 0
        #: Young collections made, objects they found unreachable, ticks that froze unscanned.
        self.young_collections = 0
        self.young_collected = 0
        self.young_frozen = 0
        #: Full collections :meth:`upkeep` made, and the objects they found unreachable.
        self.full_collections = 0
        self.full_collected = 0

    @property
    def settled(self) -> bool:
        return self._saved is not None

    def settle(self) -> None:
        """Collect, freeze what is alive and take over from the automatic collector."""
        if self._saved is None:
            self._saved = (gc.isenabled(), gc.get_threshold())
        gc.disable()
        gc.collect()
        gc.freeze()
        self._baseline = None

    def tick(self) -> None:
        """Collect the young objects and freeze the survivors, or freeze them unscanned."""
        if self._saved is None:
            return
        made = gc.get_count()[0]
        if self._skip_left and made <= max(MAX_UNSCANNED, _USUAL * self._made):
            self._skip_left -= 1
            self.young_frozen += 1
            gc.freeze()
            return
        if made > MAX_SCAN and self._capped < MAX_CAPPED:
            self._capped += 1
            self._skip_left = 0
            self.young_frozen += 1
            gc.freeze()
            return
        self._capped = 0
        found = gc.collect(0)
        gc.freeze()
        self._made = made
        self.young_collections += 1
        self.young_collected += found
        if found < max(MIN_GARBAGE, made * self._garbage_share):
            self._skip = min(max(1, 2 * self._skip), self._max_skip)
        else:
            self._skip = 0
        self._skip_left = self._skip

    async def run(self, interval: float = TICK_SECONDS) -> None:
        """:meth:`tick` every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.tick()

    def upkeep(self) -> bool:
        """Collect everything once if the frozen heap grew by the policy's share since the first
        upkeep or the last full collection; returns whether it did. Call it from the event loop
        now and then."""
        if self._saved is None:
            return False
        frozen = gc.get_freeze_count()
        if self._baseline is None:
            self._baseline = frozen
            return False
        # A small heap doubles quickly: some slack keeps it from collecting often.
        if frozen <= self._baseline * (1 + self._full_growth) + _FULL_SLACK:
            return False
        began = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self._baseline = gc.get_freeze_count()
        self.full_collections += 1
        self.full_collected += found
        logger.info(
            "full collection: %d objects unreachable, %d kept, %.0f ms",
            found,
            self._baseline,
            (time.perf_counter() - began) * 1e3,
        )
        return True

    def register(self, registry: CollectorRegistry) -> None:
        """Expose the policy's counters and the frozen heap's size on ``registry``, read at
        each scrape: ``cronloop_gc_young_collections_total``,
        ``cronloop_gc_young_collected_objects_total``, ``cronloop_gc_frozen_ticks_total``,
        ``cronloop_gc_full_collections_total``, ``cronloop_gc_full_collected_objects_total``
        and ``cronloop_gc_frozen_objects``. A frozen heap that keeps growing while the cache
        does not is garbage the young collections did not see."""
        registry.register(_HeapMetrics(self))

    def release(self) -> None:
        """Give the process its collector back: as enabled as it was, nothing frozen."""
        if self._saved is None:
            return
        enabled, thresholds = self._saved
        self._saved = None
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        if enabled:
            gc.enable()


class _HeapMetrics(Collector):
    """:meth:`HeapKeeper.register`'s collector."""

    def __init__(self, keeper: HeapKeeper) -> None:
        self._keeper = keeper

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        keeper = self._keeper
        counters = (
            (
                "young_collections",
                "Young collections the paced collector made.",
                "young_collections",
            ),
            (
                "young_collected_objects",
                "Objects young collections found unreachable.",
                "young_collected",
            ),
            ("frozen_ticks", "Ticks that froze the young objects without a scan.", "young_frozen"),
            ("full_collections", "Full collections of the frozen heap.", "full_collections"),
            (
                "full_collected_objects",
                "Objects full collections found unreachable.",
                "full_collected",
            ),
        )
        for name, documentation, attribute in counters:
            yield CounterMetricFamily(
                f"cronloop_gc_{name}", documentation, value=getattr(keeper, attribute)
            )
        yield GaugeMetricFamily(
            "cronloop_gc_frozen_objects",
            "Objects in the permanent generation, which collections skip.",
            value=gc.get_freeze_count(),
        )

"""The log sweeper: removes the log directory of every Job that is gone.

Each attempt writes its log under ``<log dir>/<job name>/`` (see
:func:`~cronloop.controllers.fanout.attempt_start`). :class:`LogSweeper` is told the name of
every deleted Job (pruned by its CronJob's history limits, deleted through the API, deleted
with its CronJob) and removes that directory on a worker thread, a batch of names at a time,
so the event loop, and with it firing, never waits on the file system. At start,
:meth:`LogSweeper.sweep` removes the directories of Jobs deleted while nobody watched (a crash,
a compacted change feed): one scan of the log directory, never a walk of the live ones.

Hand-written: it is a queue of names in front of :func:`shutil.rmtree`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cronloop.store import EventType, WatchEvent

__all__ = ["LOG_SETTLE_SECONDS", "SWEEP_LIMIT", "LogSweeper", "LogSweeperStatistics"]

logger = logging.getLogger(__name__)

#: Seconds after which a deleted Job's directory is removed once more. Attempts of a Job
#: deleted while they ran (or pruned while its last attempts were being stopped) may still
#: write a last line, which creates the directory again; the event does not say reliably
#: whether any still run, and a second look at a missing directory costs one ``lstat``.
LOG_SETTLE_SECONDS = 60.0
#: Directories the start-up sweep removes at most; the rest wait for the next start.
SWEEP_LIMIT = 10_000
#: Seconds before the sweeper's creation from which a directory counts as recent: a file
#: system's timestamps can lag the clock by a tick, and a recent directory may belong to a Job
#: created after the listing that the start-up sweep compares with.
_RECENT_MARGIN = 2.0
#: Names handed to one thread call: small enough that a name re-created meanwhile is rarely
#: already in flight, large enough that pruning thousands of runs is a few thread hops.
_BATCH = 256


@dataclass(frozen=True, slots=True)
class LogSweeperStatistics:
    """What the sweeper has done since it was created."""

    #: Directories removed (on deletion and by the start-up sweep).
    removed: int
    #: Directories the start-up sweep found without a Job.
    swept: int
    #: Names waiting for their directory to be removed.
    pending: int


def _plain_name(name: str) -> bool:
    """Whether ``name`` is one path component (a Job name always is; anything else is left)."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _remove(log_dir: Path, names: list[str]) -> int:
    """Remove ``<log_dir>/<name>`` for each name; returns how many were removed (blocking)."""
    removed = 0
    for name in names:
        path = log_dir / name
        try:
            mode = os.lstat(path).st_mode
        except OSError:  # never written (a silent job) or already gone
            continue
        if not stat.S_ISDIR(mode):  # not a Job's log directory: leave it alone
            continue
        # A running attempt may still create or write files in it: what cannot be removed now
        # stays for the next start's sweep, and an open file lives on until it is closed.
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            removed += 1
    return removed


def _stale(log_dir: Path, live: frozenset[str], before: float, limit: int) -> list[str]:
    """Directories in ``log_dir`` named for no live Job and unchanged since ``before``."""
    stale: list[str] = []
    try:
        with os.scandir(log_dir) as entries:
            for entry in entries:
                if entry.name in live or not _plain_name(entry.name):
                    continue
                try:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    if entry.stat(follow_symlinks=False).st_mtime >= before:
                        continue
                except OSError:
                    continue
                stale.append(entry.name)
                if len(stale) >= limit:
                    break
    except OSError:  # no log directory yet
        return []
    return stale


class LogSweeper:
    """Removes ``<log_dir>/<job>/`` once Job ``job`` is deleted; lives on one event loop.

    The manager calls :meth:`observe` with every Job event of its change feed, and
    :meth:`sweep` once after its first listing. A Job created again under a deleted one's name
    before the removal ran keeps its directory (:meth:`created` takes the name back).
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        settle: float = LOG_SETTLE_SECONDS,
        sweep_limit: int = SWEEP_LIMIT,
    ) -> None:
        self.log_dir = log_dir
        self._settle = settle
        self._sweep_limit = sweep_limit
        self._recent_since = time.time() - _RECENT_MARGIN
        #: Names to remove, in order of deletion (a dict as an ordered set).
        self._pending: dict[str, None] = {}
        self._again: dict[str, asyncio.TimerHandle] = {}
        self._drainer: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        #: Names created while the start-up sweep scans (None when it does not).
        self._created_during_sweep: set[str] | None = None
        self._removed = 0
        self._swept = 0

    def statistics(self) -> LogSweeperStatistics:
        return LogSweeperStatistics(
            removed=self._removed, swept=self._swept, pending=len(self._pending)
        )

    # ---- what the manager tells it --------------------------------------------------------------

    def observe(self, event: WatchEvent) -> None:
        """Take note of one change-feed event (only Jobs' additions and deletions matter)."""
        obj = event.object
        if obj.kind != "Job":
            return
        if event.type is EventType.DELETED:
            self.deleted(obj.name)
        elif event.type is EventType.ADDED:
            self.created(obj.name)

    def deleted(self, name: str) -> None:
        """Job ``name`` is gone: remove its log directory soon, off the event loop, and once
        more after ``settle`` seconds (when attempts being stopped have written their last
        line)."""
        if not _plain_name(name):
            return
        self._enqueue(name)
        previous = self._again.pop(name, None)
        if previous is not None:
            previous.cancel()
        self._again[name] = asyncio.get_running_loop().call_later(
            self._settle, self._remove_again, name
        )

    def created(self, name: str) -> None:
        """Job ``name`` exists (again): its directory is its own, keep it."""
        self._pending.pop(name, None)
        later = self._again.pop(name, None)
        if later is not None:
            later.cancel()
        if self._created_during_sweep is not None:
            self._created_during_sweep.add(name)

    def sweep(self, live: Iterable[str], *, before: float | None = None) -> None:
        """Start removing the directories of Jobs that no longer exist, in the background.

        ``live`` names every Job there is (a listing); a directory changed since ``before``
        (a Unix time; by default shortly before this sweeper was created) is kept, since it may
        belong to a Job created after that listing. At most ``sweep_limit`` directories go.
        """
        if self._sweeper is not None:
            return
        self._created_during_sweep = set()
        cutoff = self._recent_since if before is None else before
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweep(frozenset(live), cutoff), name="log-sweep"
        )

    async def wait_idle(self) -> None:
        """Wait until the sweep and every removal asked for so far are done."""
        while (task := self._sweeper or self._drainer) is not None:
            await asyncio.wait([task])  # neither raises its error nor cancels it

    def close(self) -> None:
        """Stop: pending removals are dropped (the next start's sweep finds them)."""
        for handle in self._again.values():
            handle.cancel()
        self._again.clear()
        self._pending.clear()
        for task in (self._sweeper, self._drainer):
            if task is not None:
                task.cancel()
        # A task cancelled before it ran never reaches its ``finally``.
        self._sweeper = self._drainer = None
        self._created_during_sweep = None

    # ---- internals ------------------------------------------------------------------------------

    def _remove_again(self, name: str) -> None:
        self._again.pop(name, None)
        self._enqueue(name)

    def _enqueue(self, name: str) -> None:
        self._pending[name] = None
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(
                self._drain(), name="log-removal"
            )

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = []
                for name in self._pending:
                    batch.append(name)
                    if len(batch) == _BATCH:
                        break
                for name in batch:
                    del self._pending[name]
                self._removed += await asyncio.to_thread(_remove, self.log_dir, batch)
        finally:
            if self._drainer is asyncio.current_task():  # not replaced after a close()
                self._drainer = None

    async def _sweep(self, live: frozenset[str], before: float) -> None:
        try:
            stale = await asyncio.to_thread(_stale, self.log_dir, live, before, self._sweep_limit)
            created = self._created_during_sweep or set()
            stale = [name for name in stale if name not in created]
            if len(stale) >= self._sweep_limit:
                logger.info(
                    "removing the logs of %d deleted jobs; more are left for the next start",
                    len(stale),
                )
            self._swept += len(stale)
            for name in stale:
                self._enqueue(name)
        finally:
            if self._sweeper is asyncio.current_task():
                self._created_during_sweep = None
                self._sweeper = None

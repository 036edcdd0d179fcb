"""Missed-run planning: what a CronJob controller does with the scheduled times it finds due.

:func:`plan_missed_runs` is pure. Given the schedule, the cursor (the last scheduled time dealt
with, or the creation time), ``now`` and the CronJob's policies, it returns which scheduled
times to start now, which ones are skipped and why, and when to wake up next. Nothing is
dropped silently: every due time in ``(cursor, now]`` is either started or counted under a
:class:`SkipReason`. Listing is bounded (a job firing every second that was down for a month
has 2.6 M due times): the started runs (at most ``maxCatchUpRuns``) and the newest
``max_listed`` skipped times are listed individually; the counts per reason are exact and
computed arithmetically (:meth:`Schedule.count_between`), never by enumerating.

Rules, for each due time ``t`` (``late = now - t``):

1. suspended -> ``Suspended`` (so nothing from the suspension fires on resume; Kubernetes,
   by contrast, starts the missed runs when a CronJob without a deadline is resumed);
2. ``late`` beyond the catch-up window -> ``MissedDeadline``. The window is
   ``startingDeadlineSeconds`` if set; otherwise unlimited under ``AtLeastOnce`` and the misfire
   threshold under ``AtMostOnce`` (a late start is where double starts happen, so AtMostOnce
   prefers to skip);
3. inside the window, by ``catchUp``:

   - ``None``: only the latest due time, and only if it is on time (``late`` at most the
     misfire threshold); the others -> ``CatchUpNone``;
   - ``Latest``: the latest due time; the others -> ``SupersededByLatest``;
   - ``All``: the newest ``maxCatchUpRuns``, oldest first; the older ones -> ``TooManyMissed``.

Kubernetes gives up with "too many missed start times" past 100 misses; this planner keeps
going and reports the count instead.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from cronloop.api.cronjob import (
    DEFAULT_MAX_CATCH_UP_RUNS,
    DEFAULT_MISFIRE_THRESHOLD_SECONDS,
    CatchUp,
    CronJob,
    CronJobStatus,
    Guarantee,
)
from cronloop.api.schedule import Schedule

__all__ = [
    "DEFAULT_MAX_LISTED",
    "MissedRunPlan",
    "SkipReason",
    "SkippedRun",
    "plan_for_cronjob",
    "plan_missed_runs",
]

#: How many skipped times a plan lists individually (the newest ones); the rest are counted.
DEFAULT_MAX_LISTED = 100

_TICK = timedelta(microseconds=1)


class SkipReason(enum.StrEnum):
    """Why a due scheduled time was not started."""

    SUSPENDED = "Suspended"
    MISSED_DEADLINE = "MissedDeadline"
    CATCH_UP_NONE = "CatchUpNone"
    SUPERSEDED_BY_LATEST = "SupersededByLatest"
    TOO_MANY_MISSED = "TooManyMissed"


@dataclass(frozen=True, slots=True)
class SkippedRun:
    """One scheduled time that is recorded as skipped."""

    scheduled_time: datetime
    reason: SkipReason


def _no_counts() -> Mapping[SkipReason, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class MissedRunPlan:
    """What to do now.

    ``start``: scheduled times to start now, oldest first. ``skipped``: the newest skipped
    times (at most ``max_listed``), oldest first. ``skipped_counts``: exact count per reason,
    including the ones not listed. ``last_considered``: the newest due time, which becomes the
    CronJob's ``status.lastScheduleTime`` (``None`` when nothing was due). ``next_wake``: the
    next scheduled time after ``now``.
    """

    start: tuple[datetime, ...]
    skipped: tuple[SkippedRun, ...]
    skipped_counts: Mapping[SkipReason, int] = field(default_factory=_no_counts)
    due_count: int = 0
    last_considered: datetime | None = None
    next_wake: datetime | None = None

    @property
    def skipped_total(self) -> int:
        """How many due times are skipped, listed or not."""
        return sum(self.skipped_counts.values())

    @property
    def unlisted_skipped(self) -> int:
        """How many skipped times are only counted, not listed."""
        return self.skipped_total - len(self.skipped)


def _newest(schedule: Schedule, cursor: datetime, now: datetime, limit: int) -> list[datetime]:
    """Up to ``limit`` firing instants in ``(cursor, now]``, newest first."""
    found: list[datetime] = []
    t = schedule.prev_at_or_before(now)
    while t is not None and t > cursor and len(found) < limit:
        found.append(t)
        t = schedule.prev_at_or_before(t - _TICK)
    return found


def plan_missed_runs(
    schedule: Schedule,
    *,
    last_schedule_time: datetime | None,
    created: datetime,
    now: datetime,
    starting_deadline_seconds: int | None = None,
    catch_up: CatchUp = CatchUp.LATEST,
    max_catch_up_runs: int = DEFAULT_MAX_CATCH_UP_RUNS,
    guarantee: Guarantee = Guarantee.AT_LEAST_ONCE,
    misfire_threshold_seconds: int = DEFAULT_MISFIRE_THRESHOLD_SECONDS,
    suspended: bool = False,
    max_listed: int = DEFAULT_MAX_LISTED,
) -> MissedRunPlan:
    """Plan the due times in ``(cursor, now]`` where ``cursor`` is the later of
    ``last_schedule_time`` and ``created`` (a CronJob re-created after its last run does not
    inherit the old run's times). See the module docstring for the rules.
    """
    for name, value in (
        ("created", created),
        ("now", now),
        ("last_schedule_time", last_schedule_time),
    ):
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    if max_catch_up_runs < 1:
        raise ValueError(f"max_catch_up_runs must be >= 1, got {max_catch_up_runs}")
    if max_listed < 0:
        raise ValueError(f"max_listed must be >= 0, got {max_listed}")
    if starting_deadline_seconds is not None and starting_deadline_seconds < 0:
        raise ValueError(f"starting_deadline_seconds must be >= 0, got {starting_deadline_seconds}")
    cursor = created if last_schedule_time is None else max(created, last_schedule_time)
    next_wake = schedule.next_after(max(cursor, now))
    due = schedule.count_between(cursor, now)
    if due == 0:
        return MissedRunPlan((), (), due_count=0, next_wake=next_wake)

    threshold = timedelta(seconds=misfire_threshold_seconds)
    if starting_deadline_seconds is not None:
        window: timedelta | None = timedelta(seconds=starting_deadline_seconds)
    elif guarantee is Guarantee.AT_MOST_ONCE:
        window = threshold
    else:
        window = None

    counts: dict[SkipReason, int] = {}
    if suspended:
        expired, in_window = due, 0
        counts[SkipReason.SUSPENDED] = due
    else:
        # A time exactly ``window`` late is still inside the window: count the ones before it.
        expired = 0 if window is None else schedule.count_between(cursor, now - window - _TICK)
        in_window = due - expired
        if expired:
            counts[SkipReason.MISSED_DEADLINE] = expired

    newest = _newest(schedule, cursor, now, min(due, max_catch_up_runs + max_listed + 1))
    latest = newest[0]
    started = 0
    if in_window:
        if catch_up is CatchUp.ALL:
            started = min(in_window, max_catch_up_runs)
            overflow = (SkipReason.TOO_MANY_MISSED, in_window - started)
        elif catch_up is CatchUp.LATEST:
            started = 1
            overflow = (SkipReason.SUPERSEDED_BY_LATEST, in_window - 1)
        else:
            started = 1 if now - latest <= threshold else 0
            overflow = (SkipReason.CATCH_UP_NONE, in_window - started)
        if overflow[1]:
            counts[overflow[0]] = overflow[1]

    start = tuple(reversed(newest[:started]))
    skipped: list[SkippedRun] = []
    for index, t in enumerate(newest[started:], start=started):
        if len(skipped) >= max_listed:
            break
        if suspended:
            reason = SkipReason.SUSPENDED
        elif index >= in_window:
            reason = SkipReason.MISSED_DEADLINE
        else:
            reason = {
                CatchUp.ALL: SkipReason.TOO_MANY_MISSED,
                CatchUp.LATEST: SkipReason.SUPERSEDED_BY_LATEST,
                CatchUp.NONE: SkipReason.CATCH_UP_NONE,
            }[catch_up]
        skipped.append(SkippedRun(t, reason))
    skipped.reverse()
    return MissedRunPlan(
        start=start,
        skipped=tuple(skipped),
        skipped_counts=MappingProxyType(counts),
        due_count=due,
        last_considered=latest,
        next_wake=next_wake,
    )


def plan_for_cronjob(
    cronjob: CronJob,
    now: datetime,
    *,
    max_listed: int = DEFAULT_MAX_LISTED,
    status: CronJobStatus | None = None,
    schedule: Schedule | None = None,
) -> MissedRunPlan:
    """:func:`plan_missed_runs` with every setting taken from ``cronjob``.

    The creation timestamp is the cursor of a CronJob that never ran and anchors ``@every``
    schedules; a CronJob without one is planned from ``now`` (nothing is due yet). ``status``,
    when given, is used instead of ``cronjob.status`` (a newer one); ``schedule``, when
    given, is the CronJob's parsed schedule (``spec.parsed_schedule(anchor=created)``), which
    a caller that keeps it need not have parsed again.
    """
    created = cronjob.metadata.creation_timestamp or now
    spec = cronjob.spec
    return plan_missed_runs(
        schedule or spec.parsed_schedule(anchor=created),
        last_schedule_time=(status or cronjob.status).last_schedule_time,
        created=created,
        now=now,
        starting_deadline_seconds=spec.starting_deadline_seconds,
        catch_up=spec.catch_up,
        max_catch_up_runs=spec.max_catch_up_runs,
        guarantee=spec.guarantee,
        misfire_threshold_seconds=spec.misfire_threshold_seconds,
        suspended=spec.suspend,
        max_listed=max_listed,
    )

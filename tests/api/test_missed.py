"""Missed-run planning: cases mirroring Kubernetes' CronJob controller tests, and invariants.

The first cases follow kubernetes/kubernetes pkg/controller/cronjob/utils_test.go
(``TestGetRecentUnmetScheduleTimes`` / ``mostRecentScheduleTime``): hourly schedule "0 * * * *",
T1 = 2016-05-19T10:00Z, T2 = T1 + 1h.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronloop.api.cronjob import CatchUp, CronJob, CronJobSpec, CronJobStatus, Guarantee
from cronloop.api.job import InlineStep, JobSpec
from cronloop.api.meta import ObjectMeta
from cronloop.api.missed import (
    MissedRunPlan,
    SkippedRun,
    SkipReason,
    plan_for_cronjob,
    plan_missed_runs,
)
from cronloop.api.schedule import Schedule

HOURLY = Schedule.parse("0 * * * *")
T1 = datetime(2016, 5, 19, 10, tzinfo=UTC)
T2 = T1 + timedelta(hours=1)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def plan(**kwargs: object) -> MissedRunPlan:
    args: dict[str, object] = {"schedule": HOURLY, "last_schedule_time": None}
    args.update(kwargs)
    return plan_missed_runs(**args)  # type: ignore[arg-type]


def test_k8s_case1_nothing_due_yet() -> None:
    p = plan(created=T1 - 10 * MIN, now=T1 - 7 * MIN)
    assert p.start == ()
    assert p.skipped == ()
    assert p.due_count == 0
    assert p.last_considered is None
    assert p.next_wake == T1


def test_k8s_case2_first_run_due() -> None:
    p = plan(created=T1 - 10 * MIN, now=T1 + timedelta(seconds=2))
    assert p.start == (T1,)
    assert p.skipped == ()
    assert p.last_considered == T1
    assert p.next_wake == T2


def test_k8s_case3_already_scheduled() -> None:
    p = plan(created=T1 - 10 * MIN, last_schedule_time=T1, now=T1 + 2 * MIN)
    assert p.start == ()
    assert p.due_count == 0
    assert p.next_wake == T2


def test_k8s_case4_one_more_due() -> None:
    p = plan(created=T1 - 10 * MIN, last_schedule_time=T1, now=T2 + 5 * MIN)
    assert p.start == (T2,)


@pytest.mark.parametrize(
    ("catch_up", "start", "skipped"),
    [
        (CatchUp.ALL, (T1, T2), ()),
        (CatchUp.LATEST, (T2,), (SkippedRun(T1, SkipReason.SUPERSEDED_BY_LATEST),)),
        # T2 is 5 minutes late, past the 60 s misfire threshold: None starts nothing
        (
            CatchUp.NONE,
            (),
            (SkippedRun(T1, SkipReason.CATCH_UP_NONE), SkippedRun(T2, SkipReason.CATCH_UP_NONE)),
        ),
    ],
)
def test_k8s_case5_two_due(
    catch_up: CatchUp, start: tuple[datetime, ...], skipped: tuple[SkippedRun, ...]
) -> None:
    p = plan(
        created=T1 - 2 * HOUR, last_schedule_time=T1 - HOUR, now=T2 + 5 * MIN, catch_up=catch_up
    )
    assert p.start == start
    assert p.skipped == skipped
    assert p.due_count == 2
    assert p.last_considered == T2


def test_k8s_case6_far_behind_without_deadline_keeps_going() -> None:
    # Kubernetes fails with "too many missed start times (> 100)"; we start the newest
    # maxCatchUpRuns and count the rest.
    now = T2 + timedelta(days=10)
    p = plan(created=T1 - 2 * HOUR, last_schedule_time=T1 - HOUR, now=now, catch_up=CatchUp.ALL)
    assert p.due_count == 242  # T1 - 1h exclusive .. T2 + 10 days inclusive, hourly
    assert len(p.start) == 100
    assert p.start[-1] == now
    assert p.start[0] == now - 99 * HOUR
    assert list(p.start) == sorted(p.start)
    assert dict(p.skipped_counts) == {SkipReason.TOO_MANY_MISSED: 142}
    assert len(p.skipped) == 100  # listed: the newest 100 skipped, oldest first
    assert p.skipped[-1] == SkippedRun(now - 100 * HOUR, SkipReason.TOO_MANY_MISSED)
    assert p.unlisted_skipped == 42
    assert p.last_considered == now


def test_k8s_case7_far_behind_with_short_deadline() -> None:
    now = T2 + timedelta(days=10)
    p = plan(
        created=T1 - 2 * HOUR,
        last_schedule_time=T1 - HOUR,
        now=now,
        starting_deadline_seconds=2 * 3600,
        catch_up=CatchUp.ALL,
    )
    # inside the 2 h window (inclusive): now - 2h, now - 1h, now
    assert p.start == (now - 2 * HOUR, now - HOUR, now)
    assert dict(p.skipped_counts) == {SkipReason.MISSED_DEADLINE: 239}
    assert p.skipped[-1] == SkippedRun(now - 3 * HOUR, SkipReason.MISSED_DEADLINE)


def test_deadline_exceeded_for_the_only_due_time() -> None:
    p = plan(created=T1 - MIN, now=T1 + 10 * MIN, starting_deadline_seconds=300)
    assert p.start == ()
    assert p.skipped == (SkippedRun(T1, SkipReason.MISSED_DEADLINE),)
    assert p.last_considered == T1  # the cursor moves on: it is not retried forever


def test_suspended_records_everything_as_suspended() -> None:
    p = plan(created=T1 - 2 * HOUR, last_schedule_time=T1 - HOUR, now=T2, suspended=True)
    assert p.start == ()
    assert p.skipped == (
        SkippedRun(T1, SkipReason.SUSPENDED),
        SkippedRun(T2, SkipReason.SUSPENDED),
    )
    assert p.last_considered == T2


def test_schedule_in_the_future() -> None:
    yearly = Schedule.parse("0 0 1 1 *")
    p = plan(schedule=yearly, created=T1, now=T1 + timedelta(days=30))
    assert p.due_count == 0
    assert p.start == ()
    assert p.next_wake == datetime(2017, 1, 1, tzinfo=UTC)


def test_creation_after_last_schedule_time() -> None:
    # A CronJob re-created at T2 - 30m with a stale status from an earlier incarnation: times
    # before its creation are not its runs.
    p = plan(
        created=T2 - 30 * MIN,
        last_schedule_time=T1 - 5 * HOUR,
        now=T2 + MIN,
        catch_up=CatchUp.ALL,
    )
    assert p.start == (T2,)
    assert p.due_count == 1


def test_clock_behind_cursor_plans_nothing() -> None:
    p = plan(created=T1 - HOUR, last_schedule_time=T2, now=T1)
    assert p.due_count == 0
    assert p.next_wake == T2 + HOUR


def test_catch_up_none_on_time_and_late() -> None:
    on_time = plan(created=T1 - MIN, now=T1 + 30 * timedelta(seconds=1), catch_up=CatchUp.NONE)
    assert on_time.start == (T1,)
    late = plan(created=T1 - MIN, now=T1 + 5 * MIN, catch_up=CatchUp.NONE)
    assert late.start == ()
    assert late.skipped == (SkippedRun(T1, SkipReason.CATCH_UP_NONE),)
    tolerant = plan(
        created=T1 - MIN, now=T1 + 5 * MIN, catch_up=CatchUp.NONE, misfire_threshold_seconds=600
    )
    assert tolerant.start == (T1,)


def test_at_most_once_does_not_start_late_runs_by_default() -> None:
    late = plan(created=T1 - MIN, now=T1 + 5 * MIN, guarantee=Guarantee.AT_MOST_ONCE)
    assert late.start == ()
    assert late.skipped == (SkippedRun(T1, SkipReason.MISSED_DEADLINE),)
    on_time = plan(
        created=T1 - MIN, now=T1 + 30 * timedelta(seconds=1), guarantee=Guarantee.AT_MOST_ONCE
    )
    assert on_time.start == (T1,)
    # an explicit deadline widens the window
    wide = plan(
        created=T1 - MIN,
        now=T1 + 5 * MIN,
        guarantee=Guarantee.AT_MOST_ONCE,
        starting_deadline_seconds=600,
    )
    assert wide.start == (T1,)


def test_at_least_once_starts_late_runs() -> None:
    p = plan(created=T1 - MIN, now=T1 + 5 * HOUR + MIN, guarantee=Guarantee.AT_LEAST_ONCE)
    assert p.start == (T1 + 5 * HOUR,)
    assert dict(p.skipped_counts) == {SkipReason.SUPERSEDED_BY_LATEST: 5}


def test_every_second_down_for_a_month_is_bounded() -> None:
    every_second = Schedule.parse("* * * * * *", "Europe/Berlin")
    created = datetime(2026, 3, 1, tzinfo=UTC)
    now = datetime(2026, 3, 31, tzinfo=UTC)
    p = plan(
        schedule=every_second,
        created=created,
        now=now,
        catch_up=CatchUp.ALL,
        starting_deadline_seconds=3600,
        max_catch_up_runs=50,
        max_listed=20,
    )
    assert p.due_count == 30 * 86400
    assert len(p.start) == 50
    assert p.start[-1] == now
    assert p.skipped_counts[SkipReason.TOO_MANY_MISSED] == 3601 - 50
    assert p.skipped_counts[SkipReason.MISSED_DEADLINE] == 30 * 86400 - 3601
    assert len(p.skipped) == 20
    assert p.skipped_total + len(p.start) == p.due_count


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        plan(created=T1, now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="max_catch_up_runs must be >= 1"):
        plan(created=T1, now=T2, max_catch_up_runs=0)


def _cronjob(**spec: object) -> CronJob:
    return CronJob(
        metadata=ObjectMeta(name="nightly", creation_timestamp=T1 - 2 * HOUR),
        spec=CronJobSpec(
            job_template=JobSpec(main=InlineStep(runtime="inline", callable="m:f")),
            **spec,  # type: ignore[arg-type]
        ),
        status=CronJobStatus(last_schedule_time=T1 - HOUR),
    )


def test_plan_for_cronjob_uses_the_spec() -> None:
    cj = _cronjob(schedule="0 * * * *", catch_up=CatchUp.ALL)
    assert plan_for_cronjob(cj, T2 + MIN).start == (T1, T2)
    suspended = _cronjob(schedule="0 * * * *", suspend=True)
    assert plan_for_cronjob(suspended, T2 + MIN).skipped_counts == {SkipReason.SUSPENDED: 2}
    # @every is anchored at the creation timestamp
    every = _cronjob(schedule="@every 45m", catch_up=CatchUp.ALL)
    p = plan_for_cronjob(every, T1 + MIN)
    assert p.start == (T1 - 2 * HOUR + 90 * MIN,)


def test_plan_for_cronjob_without_creation_timestamp_plans_from_now() -> None:
    cj = _cronjob(schedule="0 * * * *").model_copy(
        update={"metadata": ObjectMeta(name="fresh"), "status": CronJobStatus()}
    )
    p = plan_for_cronjob(cj, T1 + MIN)
    assert p.due_count == 0
    assert p.next_wake == T2


@settings(max_examples=200)
@given(
    expr=st.sampled_from(["*/5 * * * *", "0 * * * *", "*/30 * * * * *", "@every 7m", "0 2 * * *"]),
    zone=st.sampled_from(["UTC", "America/New_York", "Australia/Sydney"]),
    start=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 1), timezones=st.just(UTC)
    ),
    down=st.integers(min_value=0, max_value=3 * 86400),
    deadline=st.none() | st.integers(min_value=1, max_value=86400),
    catch_up=st.sampled_from(list(CatchUp)),
    guarantee=st.sampled_from(list(Guarantee)),
    max_runs=st.integers(min_value=1, max_value=20),
    max_listed=st.integers(min_value=0, max_value=30),
    suspended=st.booleans(),
)
def test_every_due_time_is_accounted_for(
    expr: str,
    zone: str,
    start: datetime,
    down: int,
    deadline: int | None,
    catch_up: CatchUp,
    guarantee: Guarantee,
    max_runs: int,
    max_listed: int,
    suspended: bool,
) -> None:
    schedule = Schedule.parse(expr, zone)
    now = start + timedelta(seconds=down)
    p = plan_missed_runs(
        schedule,
        last_schedule_time=start,
        created=start - timedelta(days=1),
        now=now,
        starting_deadline_seconds=deadline,
        catch_up=catch_up,
        max_catch_up_runs=max_runs,
        guarantee=guarantee,
        suspended=suspended,
        max_listed=max_listed,
    )
    due = list(schedule.iter_between(start, now))
    assert p.due_count == len(due)
    # never silently dropped: started + skipped (listed or counted) == due
    assert len(p.start) + p.skipped_total == len(due)
    assert len(p.skipped) == min(max_listed, p.skipped_total)
    assert set(p.start).isdisjoint(s.scheduled_time for s in p.skipped)
    assert set(p.start) <= set(due)
    assert {s.scheduled_time for s in p.skipped} <= set(due)
    assert list(p.start) == sorted(p.start)
    assert len(p.start) <= (max_runs if catch_up is CatchUp.ALL else 1)
    if suspended:
        assert p.start == ()
    if deadline is not None:
        assert all(now - t <= timedelta(seconds=deadline) for t in p.start)
    assert p.last_considered == (due[-1] if due else None)
    assert p.next_wake == schedule.next_after(now)
    # the listed skipped times are the newest skipped ones
    listed = [s.scheduled_time for s in p.skipped]
    unlisted = [t for t in due if t not in set(p.start) and t not in set(listed)]
    assert all(u < min(listed) for u in unlisted) if listed else True

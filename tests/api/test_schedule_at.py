"""``@at <instant>``: a schedule that fires once, at an exact instant (fractions of a second)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cronloop.api.cronjob import CatchUp, CronJob, CronJobSpec, Guarantee
from cronloop.api.job import InlineStep, JobSpec
from cronloop.api.meta import ObjectMeta
from cronloop.api.missed import MissedRunPlan, SkipReason, plan_missed_runs
from cronloop.api.resource import ResourceError, load_resources
from cronloop.api.schedule import Schedule, ScheduleError

AT = datetime(2026, 12, 24, 17, 0, 0, 250_000, tzinfo=UTC)
AT_TEXT = "@at 2026-12-24T18:00:00.25+01:00"
TICK = timedelta(microseconds=1)


def test_the_instant_is_read_with_its_offset_to_the_microsecond() -> None:
    for text in (AT_TEXT, "@at 2026-12-24T17:00:00.250Z", "@AT   2026-12-24T17:00:00.250000+00:00"):
        schedule = Schedule.parse(text, "Australia/Sydney")
        assert schedule.instant == AT
        assert schedule.interval is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("@at", "needs an instant"),
        ("@at tomorrow", "not an RFC 3339 instant"),
        ("@at 2026-12-24T18:00:00", "no UTC offset"),
        ("@at 2026-13-01T00:00:00Z", "not an RFC 3339 instant"),
        ("@atx 2026-12-24T18:00:00Z", "unknown schedule macro"),
    ],
)
def test_a_bad_instant_is_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ScheduleError, match=problem):
        Schedule.parse(text)


def test_it_fires_once_at_its_instant() -> None:
    schedule = Schedule.parse(AT_TEXT)
    assert schedule.next_after(AT - TICK) == AT
    assert schedule.next_after(AT) is None
    assert schedule.prev_at_or_before(AT) == AT
    assert schedule.prev_at_or_before(AT - TICK) is None
    assert list(schedule.iter_between(AT - timedelta(days=1), AT + timedelta(days=1))) == [AT]
    assert list(schedule.iter_between(AT, AT + timedelta(days=1))) == []
    assert schedule.count_between(AT - TICK, AT) == 1
    assert schedule.count_between(AT, AT + timedelta(days=365)) == 0


@given(
    start=st.integers(-(10**7), 10**7).map(lambda us: AT + timedelta(microseconds=us)),
    span=st.integers(0, 2 * 10**7).map(lambda us: timedelta(microseconds=us)),
)
def test_counting_agrees_with_listing(start: datetime, span: timedelta) -> None:
    schedule = Schedule.parse(AT_TEXT)
    listed = list(schedule.iter_between(start, start + span))
    assert (
        schedule.count_between(start, start + span) == len(listed) == (start < AT <= start + span)
    )


def _plan(
    now: datetime, catch_up: CatchUp, guarantee: Guarantee = Guarantee.AT_LEAST_ONCE
) -> MissedRunPlan:
    return plan_missed_runs(
        Schedule.parse(AT_TEXT),
        last_schedule_time=None,
        created=AT - timedelta(hours=1),
        now=now,
        catch_up=catch_up,
        guarantee=guarantee,
    )


def test_an_on_time_instant_starts_and_nothing_follows() -> None:
    plan = _plan(AT + timedelta(milliseconds=3), CatchUp.NONE)
    assert plan.start == (AT,)
    assert plan.next_wake is None
    assert plan.last_considered == AT


def test_an_instant_missed_in_downtime_follows_the_catch_up_policy() -> None:
    late = AT + timedelta(minutes=5)
    skipped = _plan(late, CatchUp.NONE)
    assert skipped.start == ()
    assert [s.reason for s in skipped.skipped] == [SkipReason.CATCH_UP_NONE]
    assert _plan(late, CatchUp.LATEST).start == (AT,)
    expired = _plan(late, CatchUp.LATEST, guarantee=Guarantee.AT_MOST_ONCE)
    assert [s.reason for s in expired.skipped] == [SkipReason.MISSED_DEADLINE]


def test_a_cronjob_accepts_an_at_schedule_and_names_a_bad_one() -> None:
    cronjob = CronJob(
        metadata=ObjectMeta(name="once"),
        spec=CronJobSpec(
            schedule=AT_TEXT,
            job_template=JobSpec(main=InlineStep(runtime="inline", callable="m:f")),
        ),
    )
    assert cronjob.spec.parsed_schedule().instant == AT
    doc = (
        "apiVersion: cronloop.dev/v1\nkind: CronJob\nmetadata: {name: once}\n"
        "spec: {schedule: '@at 2026-12-24 18:00', jobTemplate: {main: {runtime: inline, "
        "callable: 'm:f'}}}\n"
    )
    with pytest.raises(ResourceError, match=r"spec.schedule: @at .* has no UTC offset"):
        load_resources(doc)

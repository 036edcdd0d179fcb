"""Golden firing tables: (expression, zone, start, the next N instants), worked out by hand.

Expected instants are written as local times with their UTC offset, so each row reads as
"what a user in that zone sees". DST dates used (2026): New York Mar 8 / Nov 1; London and
Berlin Mar 29 / Oct 25 (01:00 UTC); Sydney Apr 5 / Oct 4; Santiago Apr 5 (00:00 -> Apr 4
23:00) / Sep 6 (00:00 -> 01:00); Chatham Apr 5 / Sep 27 (02:45 <-> 03:45); Kolkata none.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from cronloop.api.schedule import Schedule

GOLDEN: list[tuple[str, str, str, list[str]]] = [
    # -- America/New_York ------------------------------------------------------------------
    (
        "30 2 * * *",  # 02:30 does not exist on Mar 8: once, at the end of the gap
        "America/New_York",
        "2026-03-07T12:00:00+00:00",
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"],
    ),
    (
        "30 1 * * *",  # 01:30 happens twice on Nov 1: the first one only
        "America/New_York",
        "2026-10-31T12:00:00+00:00",
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
    ),
    (
        "0 * * * *",  # hourly across fall-back: the repeated 01:00 fires once
        "America/New_York",
        "2026-11-01T03:30:00+00:00",
        [
            "2026-11-01T00:00:00-04:00",
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T03:00:00-05:00",
        ],
    ),
    (
        "*/30 * * * *",  # spring-forward: 02:00, 02:30 and 03:00 collapse into one firing
        "America/New_York",
        "2026-03-08T05:00:00+00:00",
        [
            "2026-03-08T00:30:00-05:00",
            "2026-03-08T01:00:00-05:00",
            "2026-03-08T01:30:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T03:30:00-04:00",
        ],
    ),
    (
        "*/30 * * * *",  # fall-back: the second 01:00 and 01:30 do not fire
        "America/New_York",
        "2026-11-01T04:00:00+00:00",
        [
            "2026-11-01T00:30:00-04:00",
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T02:30:00-05:00",
        ],
    ),
    (
        "*/20 0 2 * * *",  # seconds first: 02:00:00/20/40 are all in the gap -> one firing
        "America/New_York",
        "2026-03-07T12:00:00+00:00",
        [
            "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:00:00-04:00",
            "2026-03-09T02:00:20-04:00",
            "2026-03-09T02:00:40-04:00",
        ],
    ),
    # -- Europe/London ---------------------------------------------------------------------
    (
        "0 * * * *",  # 01:00 GMT does not exist on Mar 29; 02:00 BST is its end
        "Europe/London",
        "2026-03-28T23:30:00+00:00",
        ["2026-03-29T00:00:00+00:00", "2026-03-29T02:00:00+01:00", "2026-03-29T03:00:00+01:00"],
    ),
    (
        "30 1 * * *",
        "Europe/London",
        "2026-10-24T12:00:00+00:00",
        ["2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"],
    ),
    # -- Europe/Berlin ---------------------------------------------------------------------
    (
        "0 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00+00:00",
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"],
    ),
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T12:00:00+00:00",
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
    ),
    (
        "*/30 * * * *",  # 02:00-02:59 repeats: only the CEST pass fires
        "Europe/Berlin",
        "2026-10-25T00:00:00+00:00",
        ["2026-10-25T02:30:00+02:00", "2026-10-25T03:00:00+01:00", "2026-10-25T03:30:00+01:00"],
    ),
    # -- Australia/Sydney (southern hemisphere) --------------------------------------------
    (
        "30 2 * * *",  # spring-forward in October
        "Australia/Sydney",
        "2026-10-02T12:00:00+00:00",
        ["2026-10-03T02:30:00+10:00", "2026-10-04T03:00:00+11:00", "2026-10-05T02:30:00+11:00"],
    ),
    (
        "30 2 * * *",  # fall-back in April: 02:00-02:59 repeats
        "Australia/Sydney",
        "2026-04-03T12:00:00+00:00",
        ["2026-04-04T02:30:00+11:00", "2026-04-05T02:30:00+11:00", "2026-04-06T02:30:00+10:00"],
    ),
    # -- Asia/Kolkata: no DST, half-hour offset --------------------------------------------
    (
        "0 * * * *",
        "Asia/Kolkata",
        "2026-03-08T00:00:00+00:00",
        ["2026-03-08T06:00:00+05:30", "2026-03-08T07:00:00+05:30", "2026-03-08T08:00:00+05:30"],
    ),
    (
        "0 9 * * *",
        "Asia/Kolkata",
        "2026-03-07T00:00:00+00:00",
        ["2026-03-07T09:00:00+05:30", "2026-03-08T09:00:00+05:30"],
    ),
    # -- America/Santiago: transitions at midnight -----------------------------------------
    (
        "0 0 * * *",  # midnight does not exist on Sep 6
        "America/Santiago",
        "2026-09-04T12:00:00+00:00",
        ["2026-09-05T00:00:00-04:00", "2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"],
    ),
    (
        "30 23 * * *",  # 23:00-23:59 of Apr 4 repeats
        "America/Santiago",
        "2026-04-03T12:00:00+00:00",
        ["2026-04-03T23:30:00-03:00", "2026-04-04T23:30:00-03:00", "2026-04-05T23:30:00-04:00"],
    ),
    # -- Pacific/Chatham: +12:45 / +13:45 --------------------------------------------------
    (
        "0 3 * * *",  # 02:45 -> 03:45 on Sep 27, so 03:00 fires at 03:45
        "Pacific/Chatham",
        "2026-09-25T12:00:00+00:00",
        ["2026-09-26T03:00:00+12:45", "2026-09-27T03:45:00+13:45", "2026-09-28T03:00:00+13:45"],
    ),
    # -- seconds, intervals, leap days, day OR semantics ------------------------------------
    (
        "15 */20 * * * *",
        "UTC",
        "2026-01-01T00:00:00+00:00",
        [
            "2026-01-01T00:00:15+00:00",
            "2026-01-01T00:20:15+00:00",
            "2026-01-01T00:40:15+00:00",
            "2026-01-01T01:00:15+00:00",
        ],
    ),
    (
        "@every 1h30m",  # anchored at the Unix epoch; 5400 s divides a day
        "America/New_York",
        "2026-03-08T05:00:00+00:00",
        ["2026-03-08T06:00:00+00:00", "2026-03-08T07:30:00+00:00", "2026-03-08T09:00:00+00:00"],
    ),
    (
        "@every 2m",  # elapsed time: the fall-back hour does not repeat or skip anything
        "America/New_York",
        "2026-11-01T05:58:00+00:00",
        ["2026-11-01T06:00:00+00:00", "2026-11-01T06:02:00+00:00", "2026-11-01T06:04:00+00:00"],
    ),
    (
        "0 0 29 2 *",
        "UTC",
        "2026-01-01T00:00:00+00:00",
        ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00", "2036-02-29T00:00:00+00:00"],
    ),
    (
        "0 0 1 * 1",  # both day fields restricted: the 1st OR a Monday
        "UTC",
        "2026-03-25T00:00:00+00:00",
        [
            "2026-03-30T00:00:00+00:00",
            "2026-04-01T00:00:00+00:00",
            "2026-04-06T00:00:00+00:00",
            "2026-04-13T00:00:00+00:00",
        ],
    ),
    (
        "0 0 * * 1",  # day-of-month is '*': Mondays only
        "UTC",
        "2026-03-25T00:00:00+00:00",
        ["2026-03-30T00:00:00+00:00", "2026-04-06T00:00:00+00:00"],
    ),
    (
        "0 0 1 * *",  # day-of-week is '*': the 1st only
        "UTC",
        "2026-03-25T00:00:00+00:00",
        ["2026-04-01T00:00:00+00:00", "2026-05-01T00:00:00+00:00"],
    ),
    (
        "@weekly",  # Sunday midnight
        "Europe/Berlin",
        "2026-03-25T00:00:00+00:00",
        ["2026-03-29T00:00:00+01:00", "2026-04-05T00:00:00+02:00"],
    ),
]


def _ids() -> list[str]:
    return [f"{expr}|{zone}|{start[:10]}" for expr, zone, start, _ in GOLDEN]


@pytest.mark.parametrize(("expr", "zone", "start", "expected"), GOLDEN, ids=_ids())
def test_next_after_golden(expr: str, zone: str, start: str, expected: list[str]) -> None:
    schedule = Schedule.parse(expr, zone)
    t = datetime.fromisoformat(start)
    got: list[datetime] = []
    for _ in expected:
        following = schedule.next_after(t)
        assert following is not None
        assert following.tzinfo is UTC
        got.append(following)
        t = following
    assert got == [datetime.fromisoformat(e) for e in expected]


@pytest.mark.parametrize(("expr", "zone", "start", "expected"), GOLDEN, ids=_ids())
def test_iter_and_count_golden(expr: str, zone: str, start: str, expected: list[str]) -> None:
    schedule = Schedule.parse(expr, zone)
    begin = datetime.fromisoformat(start)
    end = datetime.fromisoformat(expected[-1])
    want = [datetime.fromisoformat(e) for e in expected]
    assert list(schedule.iter_between(begin, end)) == want
    assert schedule.count_between(begin, end) == len(want)


@pytest.mark.parametrize(("expr", "zone", "start", "expected"), GOLDEN, ids=_ids())
def test_prev_at_or_before_golden(expr: str, zone: str, start: str, expected: list[str]) -> None:
    schedule = Schedule.parse(expr, zone)
    want = [datetime.fromisoformat(e) for e in expected]
    for earlier, later in itertools.pairwise(want):
        assert schedule.prev_at_or_before(later) == later
        assert schedule.prev_at_or_before(later - (later - earlier) / 2) == earlier


def test_every_anchor_is_respected() -> None:
    anchor = datetime(2026, 3, 8, 6, 57, tzinfo=UTC)
    schedule = Schedule.parse("@every 90s", "America/New_York", anchor=anchor)
    got = list(
        schedule.iter_between(
            datetime(2026, 3, 8, 6, 58, tzinfo=UTC), anchor.replace(minute=3, hour=7)
        )
    )
    assert got == [
        datetime(2026, 3, 8, 6, 58, 30, tzinfo=UTC),
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # the instant New York springs forward
        datetime(2026, 3, 8, 7, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 8, 7, 3, tzinfo=UTC),
    ]


def test_second_occurrence_prev_and_next() -> None:
    # 01:15 EST is the *second* 01:15 of Nov 1 in New York: the fires around it are 01:30 EDT
    # (before it, despite the later wall-clock time) and 02:00 EST.
    schedule = Schedule.parse("*/30 * * * *", "America/New_York")
    t = datetime.fromisoformat("2026-11-01T01:15:00-05:00")
    assert schedule.prev_at_or_before(t) == datetime.fromisoformat("2026-11-01T01:30:00-04:00")
    assert schedule.next_after(t) == datetime.fromisoformat("2026-11-01T02:00:00-05:00")

"""Schedule parsing, errors, and properties checked against an independent brute-force oracle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from cronloop.api.schedule import (
    Schedule,
    ScheduleError,
    _cron,
    parse_duration,
    parse_time_zone,
)

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Australia/Sydney",
    "Asia/Kolkata",
    "America/Santiago",
    "Pacific/Chatham",
    "Australia/Lord_Howe",  # a 30-minute DST shift
]
MINUTE_EXPRESSIONS = [
    "* * * * *",
    "*/7 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "15,45 1-3 * * *",
    "0 0 * * *",
    "*/20 23,0,1 * * *",
    "5 2 1 * 0",
]


def _naive_matches(expr: str, lo: datetime, hi: datetime) -> set[datetime]:
    """Every naive wall time in [lo, hi] that croniter matches (croniter sees no zones here)."""
    it = croniter(expr, lo - timedelta(minutes=1))
    found: set[datetime] = set()
    while (t := it.get_next(datetime)) <= hi:
        found.add(t)
    return found


def _brute_force(expr: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Firing instants in (start, end] by walking every UTC minute and applying the DST rules.

    An instant fires if its local wall time matches and is the first occurrence (fold=0), or
    if it is the end of a spring-forward gap and any wall time of the gap (or the end itself)
    matches.
    """
    tz = ZoneInfo(zone)
    wall_lo = start.astimezone(tz).replace(tzinfo=None) - timedelta(hours=3)
    wall_hi = end.astimezone(tz).replace(tzinfo=None) + timedelta(hours=3)
    matches = _naive_matches(expr, wall_lo, wall_hi)
    out: list[datetime] = []
    u = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while u <= end:
        local = u.astimezone(tz)
        before = (u - timedelta(minutes=1)).astimezone(tz).utcoffset()
        now_offset = local.utcoffset()
        assert before is not None
        assert now_offset is not None
        wall = local.replace(tzinfo=None, fold=0)
        if now_offset > before:  # just after a gap: the gap's wall times fire here
            steps = (now_offset - before) // timedelta(minutes=1)
            fires = any(wall - timedelta(minutes=i) in matches for i in range(steps + 1))
        else:
            fires = local.fold == 0 and wall in matches
        if fires:
            out.append(u)
        u += timedelta(minutes=1)
    return out


#: Two days starting the day before each zone's 2026 transitions.
TRANSITIONS: dict[str, list[datetime]] = {
    "UTC": [datetime(2026, 3, 7, 12, tzinfo=UTC)],
    "America/New_York": [
        datetime(2026, 3, 7, 12, tzinfo=UTC),
        datetime(2026, 10, 31, 12, tzinfo=UTC),
    ],
    "Europe/London": [
        datetime(2026, 3, 28, 12, tzinfo=UTC),
        datetime(2026, 10, 24, 12, tzinfo=UTC),
    ],
    "Europe/Berlin": [
        datetime(2026, 3, 28, 12, tzinfo=UTC),
        datetime(2026, 10, 24, 12, tzinfo=UTC),
    ],
    "Australia/Sydney": [
        datetime(2026, 4, 3, 12, tzinfo=UTC),
        datetime(2026, 10, 2, 12, tzinfo=UTC),
    ],
    "Asia/Kolkata": [datetime(2026, 3, 7, 12, tzinfo=UTC)],
    "America/Santiago": [
        datetime(2026, 4, 3, 12, tzinfo=UTC),
        datetime(2026, 9, 4, 12, tzinfo=UTC),
    ],
    "Pacific/Chatham": [
        datetime(2026, 4, 3, 12, tzinfo=UTC),
        datetime(2026, 9, 25, 12, tzinfo=UTC),
    ],
    "Australia/Lord_Howe": [
        datetime(2026, 4, 3, 12, tzinfo=UTC),
        datetime(2026, 10, 2, 12, tzinfo=UTC),
    ],
}


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("expr", MINUTE_EXPRESSIONS)
def test_matches_brute_force_around_transitions(expr: str, zone: str) -> None:
    schedule = Schedule.parse(expr, zone)
    for start in TRANSITIONS[zone]:
        end = start + timedelta(days=2)
        expected = _brute_force(expr, zone, start, end)
        assert list(schedule.iter_between(start, end)) == expected, (expr, zone, start)
        assert schedule.count_between(start, end) == len(expected)


@pytest.mark.parametrize("expr", ["*/7 * * * *", "15,45 1-3 * * *", "* * * * *"])
def test_ranges_starting_and_ending_inside_transitions(expr: str) -> None:
    # Starts and ends on every 7th minute through both New York transitions, including the
    # second pass of the repeated hour, where wall time runs "backwards" relative to instants.
    schedule = Schedule.parse(expr, "America/New_York")
    for base in (datetime(2026, 3, 8, 6, tzinfo=UTC), datetime(2026, 11, 1, 4, 30, tzinfo=UTC)):
        for k in range(0, 180, 7):
            start = base + timedelta(minutes=k)
            end = start + timedelta(minutes=95)
            expected = _brute_force(expr, "America/New_York", start, end)
            assert list(schedule.iter_between(start, end)) == expected, start
            assert schedule.count_between(start, end) == len(expected), start


instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
expressions = st.sampled_from(
    [*MINUTE_EXPRESSIONS, "*/10 * * * * *", "0 30 2 * * *", "@hourly", "@every 45m", "0 0 29 2 *"]
)


@settings(max_examples=300)
@given(expr=expressions, zone=st.sampled_from(ZONES), t=instants)
def test_next_and_prev_agree(expr: str, zone: str, t: datetime) -> None:
    schedule = Schedule.parse(expr, zone)
    nxt = schedule.next_after(t)
    assert nxt is not None  # only @at schedules run out
    assert nxt > t
    assert schedule.prev_at_or_before(nxt) == nxt
    prev = schedule.prev_at_or_before(t)
    assert prev is not None
    assert prev <= t
    # nothing fires strictly between prev and nxt
    assert schedule.next_after(prev) == nxt
    assert schedule.prev_at_or_before(nxt - timedelta(microseconds=1)) == prev


@settings(max_examples=100)
@given(
    expr=expressions,
    zone=st.sampled_from(ZONES),
    start=instants,
    hours=st.integers(min_value=0, max_value=30),
)
def test_count_matches_iteration(expr: str, zone: str, start: datetime, hours: int) -> None:
    schedule = Schedule.parse(expr, zone)
    end = start + timedelta(hours=hours, minutes=17)
    listed = list(schedule.iter_between(start, end))
    assert listed == sorted(set(listed))
    assert all(start < t <= end for t in listed)
    assert schedule.count_between(start, end) == len(listed)


@pytest.mark.parametrize("expr", ["0 0 L * *", "0 9 * * 5#2", "30 2 15W * *", "0 12 * * L5"])
def test_special_day_forms_count_like_they_iterate(expr: str) -> None:
    schedule = Schedule.parse(expr, "America/New_York")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = datetime(2027, 1, 1, tzinfo=UTC)
    listed = list(schedule.iter_between(start, end))
    assert len(listed) == 12
    assert schedule.count_between(start, end) == 12


def test_count_is_arithmetic_for_huge_ranges() -> None:
    # Every second for a month: the count must come from arithmetic, not 2.6 M iterations.
    schedule = Schedule.parse("* * * * * *", "Europe/Berlin")
    start = datetime(2026, 3, 1, tzinfo=UTC)
    end = datetime(2026, 4, 1, tzinfo=UTC)
    # one firing per UTC second: the skipped local hour collapses into its end instant
    assert schedule.count_between(start, end) == 31 * 86400
    assert schedule.count_between(end, start) == 0


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("61 * * * *", "minute must be 0-59, got 61"),
        ("* 24 * * *", "hour must be 0-23, got 24"),
        ("* * 0 * *", "day-of-month must be 1-31, got 0"),
        ("* * * 13 *", "month must be 1-12, got 13"),
        ("* * * * 8", "day-of-week must be 0-7, got 8"),
        ("60 * * * * *", "second must be 0-59, got 60"),
        ("* * * foo *", "month has an unknown value 'foo'"),
        ("*/0 * * * *", "minute step must be 1-59, got 0"),
        ("? * * * *", "'?' is only allowed in day-of-month and day-of-week"),
        ("H * * * *", "hashed 'H' is not supported"),
        ("* * * *", "expected 5 fields"),
        ("* * * * * * *", "got 7"),
        ("0 0 30 2 *", "never fires"),
        ("@reboot", "unknown schedule macro '@reboot'"),
        ("@every", "invalid duration ''"),
        ("@every 1.5h", "invalid duration '1.5h'"),
        ("@every 10ms", "invalid duration '10ms'"),
        ("", "schedule must not be empty"),
        ("1-2-3 * * * *", "minute '1-2-3' is malformed"),
    ],
)
def test_parse_errors_name_the_problem(expr: str, fragment: str) -> None:
    with pytest.raises(ScheduleError) as info:
        Schedule.parse(expr)
    assert fragment in str(info.value)


def test_unknown_zone() -> None:
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        Schedule.parse("* * * * *", "Mars/Olympus")
    assert parse_time_zone("Asia/Kolkata").key == "Asia/Kolkata"


def test_naive_datetimes_are_refused() -> None:
    schedule = Schedule.parse("* * * * *")
    with pytest.raises(ValueError, match="t must be a timezone-aware datetime"):
        schedule.next_after(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="end must be a timezone-aware datetime"):
        list(schedule.iter_between(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2)))
    with pytest.raises(ScheduleError, match="anchor"):
        Schedule.parse("@every 1m", anchor=datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("1h30m", 5400), ("2m", 120), ("1d", 86400), ("1d2h3m4s", 93784)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_macros_equal_their_expansion_and_case_is_ignored() -> None:
    start = datetime(2026, 5, 5, 5, 5, tzinfo=UTC)
    for macro, expansion in [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@HOURLY", "0 * * * *"),
    ]:
        a = Schedule.parse(macro, "Europe/Berlin")
        b = Schedule.parse(expansion, "Europe/Berlin")
        assert a.next_after(start) == b.next_after(start), macro
    assert Schedule.parse("0 0 * JAN,Mar MON-fri").next_after(start) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


def test_value_semantics() -> None:
    a = Schedule.parse("*/5 * * * *", "Europe/Berlin")
    assert a == Schedule.parse("*/5 * * * *", ZoneInfo("Europe/Berlin"))
    assert a != Schedule.parse("*/5 * * * *", "UTC")
    assert len({a, Schedule.parse("*/5 * * * *", "Europe/Berlin")}) == 1
    assert a.interval is None
    assert Schedule.parse("@every 1h30m").interval == timedelta(minutes=90)
    assert repr(a) == "Schedule('*/5 * * * *', 'Europe/Berlin')"


_NAIVE_EXPRESSIONS = [
    "*/5 9-17 * * mon-fri",
    "0 0 29 2 *",
    "0 0 29 2 1",
    "30 2 * * *",
    "15 */3 1,15 * *",
    "0 0 31 * *",
    "1-5/2 */2 * jan,jul *",
    "0 0,12 * * 6,0",
    "* * * * *",
    "*/7 * * * * *",
    "10 20 3 * * *",
    "59 59 23 31 12 *",
    "3 4 5 6 7 *",
    "0 0 * feb *",
]


@pytest.mark.parametrize("expression", _NAIVE_EXPRESSIONS)
@settings(max_examples=150, deadline=None)
@given(
    offset=st.integers(min_value=0, max_value=12 * 365 * 86_400),
    micros=st.sampled_from([0, 1, 500_000, 999_999]),
)
def test_fast_stepping_matches_croniter(expression: str, offset: int, micros: int) -> None:
    """The field-set stepper that replaced croniter's get_next/get_prev agrees with it."""
    fields = expression.split()
    start = datetime(2020, 1, 1) + timedelta(seconds=offset, microseconds=micros)
    seconds_first = len(fields) == 6
    after = croniter(expression, start, second_at_beginning=seconds_first).get_next(datetime)
    before = croniter(expression, start, second_at_beginning=seconds_first).get_prev(datetime)
    matcher = _cron(expression, tuple(fields))
    assert matcher.next_naive(start) == after
    assert matcher.prev_naive(start) == before

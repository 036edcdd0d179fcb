"""Schedules: cron expressions and fixed intervals, evaluated with explicit DST rules.

Syntax (see docs/api.md):

- 5-field cron ``minute hour day-of-month month day-of-week``;
- 6-field cron with **seconds first** (``second minute hour dom month dow``, the Quartz and
  robfig/cron convention);
- macros ``@yearly @annually @monthly @weekly @daily @midnight @hourly``;
- intervals ``@every 90s``, ``@every 1h30m``, ``@every 2d`` (units ``d h m s``): absolute
  elapsed time, ``anchor + k * interval``, unaffected by wall clocks and DST;
- one instant, ``@at 2026-12-24T18:00:00+01:00`` (RFC 3339 with its UTC offset, fractions of
  a second allowed): the schedule fires once, like dkron's ``@at`` or APScheduler's ``date``
  trigger.

croniter does the field matching, but only on *naive* wall-clock times: its handling of aware
datetimes across DST transitions has a long bug history (skipped and doubled firings; croniter
7 still fires ``0 * * * *`` at both 01:00 EDT and 01:00 EST on 2026-11-01 in New York), so the
mapping from local wall-clock time to an instant is hand-written here, with these rules:

- a local time that does not exist (spring-forward gap) fires once, at the end of the gap (the
  first valid instant); several matching times in one gap collapse into that one firing;
- a local time that occurs twice (fall-back) fires once, at its first occurrence (``fold=0``).

The mapping from naive local time to UTC is then monotone (non-decreasing), which is what makes
``next_after``, ``prev_at_or_before`` and the arithmetic ``count_between`` exact.
"""

from __future__ import annotations

import bisect
import functools
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

__all__ = ["EPOCH", "MACROS", "Schedule", "ScheduleError", "parse_duration", "parse_time_zone"]

#: Default anchor of ``@every`` intervals: every replica computes the same firing instants.
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

MACROS: Final[dict[str, str]] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_SECOND = timedelta(seconds=1)
_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, low, high, names) of each field of a 6-field expression, seconds first.
_FIELDS: Final[tuple[tuple[str, int, int, tuple[str, ...]], ...]] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)
_TOKEN_RE = re.compile(r"(\*|\?|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(\d+))?")
_SPECIAL_RE = re.compile(r"[lw#]")


class ScheduleError(ValueError):
    """A schedule expression or time zone that cannot be used, with the reason."""


def parse_time_zone(name: str) -> ZoneInfo:
    """Return the IANA zone ``name`` or raise :class:`ScheduleError`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {name!r} (expected an IANA name)") from exc


def _parse_instant(expression: str) -> datetime:
    """The instant of ``@at <instant>``: RFC 3339 with a UTC offset (``Z`` or ``+01:00``)."""
    text = expression.strip()[3:].strip()
    if not text:
        raise ScheduleError("@at needs an instant, e.g. '@at 2026-12-24T18:00:00+01:00'")
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ScheduleError(
            f"@at {text!r} is not an RFC 3339 instant (e.g. 2026-12-24T18:00:00+01:00)"
        ) from None
    if instant.tzinfo is None:
        raise ScheduleError(f"@at {text!r} has no UTC offset: write the instant with Z or +HH:MM")
    return instant.astimezone(UTC)


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``-style durations (units ``d h m s``, largest first, whole seconds)."""
    match = _DURATION_RE.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise ScheduleError(
            f"invalid duration {text!r} (expected e.g. '90s', '1h30m', '2d'; units d, h, m, s)"
        )
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if value < _SECOND:
        raise ScheduleError(f"invalid duration {text!r} (must be at least 1s)")
    return value


def _check_field(expr: str, spec: tuple[str, int, int, tuple[str, ...]], text: str) -> None:
    name, low, high, names = spec
    for token in text.split(","):
        if token.startswith("h"):
            raise ScheduleError(f"invalid cron expression {expr!r} (hashed 'H' is not supported)")
        if _SPECIAL_RE.search(token) and name in ("day-of-month", "day-of-week"):
            continue  # L, W and # forms: croniter validates them below
        match = _TOKEN_RE.fullmatch(token)
        if match is None:
            raise ScheduleError(f"invalid cron expression {expr!r} ({name} {token!r} is malformed)")
        base, step = match.groups()
        if base == "?" and name not in ("day-of-month", "day-of-week"):
            raise ScheduleError(
                f"invalid cron expression {expr!r} ('?' is only allowed in day-of-month and "
                f"day-of-week, not {name})"
            )
        if base not in ("*", "?"):
            for part in base.split("-"):
                if part.isdigit():
                    if not low <= int(part) <= high:
                        raise ScheduleError(
                            f"invalid cron expression {expr!r} ({name} must be {low}-{high}, "
                            f"got {part})"
                        )
                elif part not in names:
                    raise ScheduleError(
                        f"invalid cron expression {expr!r} ({name} has an unknown value {part!r})"
                    )
        if step is not None and not 1 <= int(step) <= high:
            raise ScheduleError(
                f"invalid cron expression {expr!r} ({name} step must be 1-{high}, got {step})"
            )


def _all_values(field: list[int | str], low: int, high: int) -> list[int]:
    if field == ["*"]:
        return list(range(low, high + 1))
    return sorted({int(v) for v in field})


@functools.lru_cache(maxsize=16_384)
def _checked_cron(expression: str, text: str) -> _Cron:
    """The matcher of the cron expression ``text`` (``expression`` normalised), its fields
    checked first. Remembered: every read of a CronJob validates its schedule, so one
    CronJob's expression is parsed several times per reconcile. A failed check raises and
    is not cached."""
    fields = text.split(" ")
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"invalid cron expression {expression!r} (expected 5 fields 'minute hour "
            f"day-of-month month day-of-week' or 6 with seconds first, got {len(fields)})"
        )
    specs = _FIELDS if len(fields) == 6 else _FIELDS[1:]
    for spec, field in zip(specs, fields, strict=True):
        _check_field(expression, spec, field)
    return _cron(expression, tuple(fields))


@functools.lru_cache(maxsize=16_384)
def _cron(expression: str, fields: tuple[str, ...]) -> _Cron:
    """One shared, thread-safe matcher per expression: building one costs ~1 ms (croniter
    parses and probes it), and a scheduler reads the same few expressions over and over.
    A failed parse raises and is not cached."""
    return _Cron(expression, list(fields))


class _Cron:
    """The wall-clock part of a cron schedule: matching on naive local times."""

    def __init__(self, expr: str, fields: list[str]) -> None:
        self.has_seconds = len(fields) == 6
        self.expr = " ".join(fields)
        try:
            probe = croniter(self.expr, datetime(2000, 1, 1), second_at_beginning=self.has_seconds)
            probe.get_next(datetime)
        except CroniterBadDateError as exc:
            raise ScheduleError(f"cron expression {expr!r} never fires") from exc
        except (CroniterError, ValueError, KeyError) as exc:
            raise ScheduleError(f"invalid cron expression {expr!r} ({exc})") from exc
        expanded = probe.expanded
        self.minutes = _all_values(expanded[0], 0, 59)
        self.hours = _all_values(expanded[1], 0, 23)
        self.seconds = _all_values(expanded[5], 0, 59) if self.has_seconds else [0]
        dom_text, dow_text = fields[-3], fields[-1]
        self._simple_days = not (_SPECIAL_RE.search(dom_text) or _SPECIAL_RE.search(dow_text))
        # The fast day matcher only reads plain sets; L, W and # days go through croniter.
        self._dom: set[int] | None = None
        self._months: set[int] | None = None
        self._dow: set[int] | None = None
        if self._simple_days:
            if expanded[2] != ["*"]:
                self._dom = {int(v) for v in expanded[2]}
            if expanded[3] != ["*"]:
                self._months = {int(v) for v in expanded[3]}
            if expanded[4] != ["*"]:
                self._dow = {int(v) % 7 for v in expanded[4]}
        self._per_hour = len(self.minutes) * len(self.seconds)
        self.per_day = len(self.hours) * self._per_hour

        # Building a croniter parses the expression again (~0.3 ms); single steps reuse one
        # instance, re-positioned under a lock because a Schedule may be shared by threads.
        self._shared = probe
        self._lock = threading.Lock()

    def iterator(self, start: datetime) -> croniter:
        """A private croniter positioned at ``start``, for long iterations."""
        return croniter(self.expr, start, second_at_beginning=self.has_seconds)

    def first_after(self, start: datetime, accept: Callable[[datetime], bool]) -> datetime:
        """The first matching naive time after ``start`` for which ``accept`` is true."""
        if self._simple_days:
            wall = self.next_naive(start)
            while not accept(wall):
                wall = self.next_naive(wall)
            return wall
        with self._lock:
            self._shared.set_current(start, force=True)
            while True:
                found: datetime = self._shared.get_next(datetime)
                if accept(found):
                    return found

    def next_naive(self, start: datetime) -> datetime:
        """The first matching naive time strictly after ``start`` (plain day fields only).

        Computed from the expanded field sets: a day scan plus a bisect per field. croniter's
        ``get_next`` took about 150 us a call and was the largest cost of loading many
        CronJobs; this is about 20 times faster and is checked against croniter by the tests.
        """
        day = start.date()
        after = _seconds_of_day(start)
        # A valid expression fires at least once in any 8 years (Feb 29 on a given weekday
        # is the rarest); the bound only guards against a bug turning into a hang.
        months = self._months
        for _ in range(8 * 366 + 1):
            if months is not None and day.month not in months:
                # Straight to the first day of the next month.
                day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
                after = -1
                continue
            if self.day_matches(day):
                tod = self._first_tod_after(after)
                if tod is not None:
                    return datetime.combine(day, tod)
            day += timedelta(days=1)
            after = -1
        raise ScheduleError(f"cron expression {self.expr!r} does not fire within 8 years")

    def prev_naive(self, start: datetime) -> datetime:
        """The last matching naive time strictly before ``start`` (plain day fields only).

        The mirror of :meth:`next_naive`. Raises :class:`CroniterBadDateError`, like
        croniter, when there is none (before the year 1).
        """
        day = start.date()
        # Whole seconds strictly before ``start``: up to the second itself if it has a
        # fraction, else up to the one before.
        upto = _seconds_of_day(start) - (0 if start.microsecond else 1)
        months = self._months
        try:
            for _ in range(8 * 366 + 1):
                if months is not None and day.month not in months:
                    # Straight to the last day of the previous month.
                    day = date(day.year, day.month, 1) - timedelta(days=1)
                    upto = _DAY_SECONDS - 1
                    continue
                if self.day_matches(day):
                    tod = self._last_tod_upto(upto)
                    if tod is not None:
                        return datetime.combine(day, tod)
                day -= timedelta(days=1)
                upto = _DAY_SECONDS - 1
        except OverflowError:
            pass
        raise CroniterBadDateError(f"no time matches {self.expr!r} before {start}")

    def _last_tod_upto(self, upto: int) -> time | None:
        """The last matching time of day at or before second ``upto`` of the day."""
        if upto < 0:
            return None
        hour, rest = divmod(upto, 3600)
        minute, second = divmod(rest, 60)
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        i = bisect.bisect_right(hours, hour) - 1
        if i < 0:
            return None
        if hours[i] < hour:
            return time(hours[i], minutes[-1], seconds[-1])
        j = bisect.bisect_right(minutes, minute) - 1
        if j >= 0:
            if minutes[j] < minute:
                return time(hour, minutes[j], seconds[-1])
            k = bisect.bisect_right(seconds, second) - 1
            if k >= 0:
                return time(hour, minute, seconds[k])
            if j >= 1:
                return time(hour, minutes[j - 1], seconds[-1])
        if i >= 1:
            return time(hours[i - 1], minutes[-1], seconds[-1])
        return None

    def _first_tod_after(self, after: int) -> time | None:
        """The first matching time of day strictly after second ``after`` of the day."""
        hour, rest = divmod(after + 1, 3600)
        minute, second = divmod(rest, 60)
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        i = bisect.bisect_left(hours, hour)
        if i == len(hours):
            return None
        if hours[i] > hour:
            return time(hours[i], minutes[0], seconds[0])
        j = bisect.bisect_left(minutes, minute)
        if j < len(minutes):
            if minutes[j] > minute:
                return time(hour, minutes[j], seconds[0])
            k = bisect.bisect_left(seconds, second)
            if k < len(seconds):
                return time(hour, minute, seconds[k])
            if j + 1 < len(minutes):
                return time(hour, minutes[j + 1], seconds[0])
        if i + 1 < len(hours):
            return time(hours[i + 1], minutes[0], seconds[0])
        return None

    def last_before(self, start: datetime) -> datetime:
        """The last matching naive time strictly before ``start``."""
        if self._simple_days:
            return self.prev_naive(start)
        with self._lock:
            self._shared.set_current(start, force=True)
            wall: datetime = self._shared.get_prev(datetime)
            return wall

    def day_matches(self, day: date) -> bool:
        if not self._simple_days:
            probe = datetime.combine(day, time(self.hours[0], self.minutes[0], self.seconds[0]))
            return bool(croniter.match(self.expr, probe, second_at_beginning=self.has_seconds))
        if self._months is not None and day.month not in self._months:
            return False
        dom_ok = self._dom is None or day.day in self._dom
        dow_ok = self._dow is None or (day.isoweekday() % 7) in self._dow
        if self._dom is not None and self._dow is not None:
            return dom_ok or dow_ok  # classic cron: both restricted means either one
        return dom_ok and dow_ok

    def _count_tod_upto(self, seconds_of_day: int) -> int:
        """How many matching times of day are at or before ``seconds_of_day``."""
        if seconds_of_day < 0:
            return 0
        hour, rest = divmod(seconds_of_day, 3600)
        minute, second = divmod(rest, 60)
        total = bisect.bisect_left(self.hours, hour) * self._per_hour
        if hour in self.hours:
            total += bisect.bisect_left(self.minutes, minute) * len(self.seconds)
            if minute in self.minutes:
                total += bisect.bisect_right(self.seconds, second)
        return total

    def count_naive(self, lo: datetime, hi: datetime) -> int:
        """Number of matching naive times ``c`` with ``lo < c <= hi``."""
        if hi <= lo:
            return 0
        total = 0
        day = lo.date()
        while day <= hi.date():
            if self.day_matches(day):
                upper = self.per_day
                if day == hi.date():
                    upper = self._count_tod_upto(_seconds_of_day(hi))
                lower = 0
                if day == lo.date():
                    lower = self._count_tod_upto(_seconds_of_day(lo))
                total += upper - lower
            day += timedelta(days=1)
        return total


_DAY_SECONDS = 86_400


def _seconds_of_day(t: datetime) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


class Schedule:
    """A parsed schedule bound to a time zone; every method takes and returns aware datetimes.

    Results are UTC datetimes. ``iter_between`` and ``count_between`` cover the half-open
    range ``(start, end]``: the times that became due after ``start`` up to and including
    ``end``, which is what the missed-run planner asks for.
    """

    __slots__ = ("_at", "_cron", "_interval", "anchor", "expression", "tz")

    def __init__(
        self,
        expression: str,
        tz: ZoneInfo,
        cron: _Cron | None,
        interval: timedelta | None,
        anchor: datetime,
        at: datetime | None = None,
    ) -> None:
        self.expression = expression
        self.tz = tz
        self.anchor = anchor
        self._cron = cron
        self._interval = interval
        self._at = at

    @classmethod
    def parse(
        cls, expression: str, tz: str | ZoneInfo = "UTC", *, anchor: datetime = EPOCH
    ) -> Schedule:
        """Parse ``expression`` for the zone ``tz``; raise :class:`ScheduleError` if invalid.

        ``anchor`` is where ``@every`` intervals start counting (ignored by cron expressions).
        """
        zone = parse_time_zone(tz) if isinstance(tz, str) else tz
        text = " ".join(expression.split()).lower()
        if not text:
            raise ScheduleError("schedule must not be empty")
        if text.startswith("@at ") or text == "@at":
            return cls(expression, zone, None, None, EPOCH, at=_parse_instant(expression))
        if text.startswith("@every"):
            if anchor.tzinfo is None:
                raise ScheduleError("the anchor of an @every schedule must be timezone-aware")
            interval = parse_duration(text.removeprefix("@every").strip())
            return cls(expression, zone, None, interval, anchor.astimezone(UTC))
        if text.startswith("@"):
            if text not in MACROS:
                raise ScheduleError(
                    f"unknown schedule macro {expression!r} (expected one of "
                    f"{', '.join(sorted(MACROS))}, '@every <duration>' or '@at <instant>')"
                )
            text = MACROS[text]
        return cls(expression, zone, _checked_cron(expression, text), None, EPOCH)

    def __repr__(self) -> str:
        return f"Schedule({self.expression!r}, {self.tz.key!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return (self.expression, self.tz.key, self.anchor) == (
            other.expression,
            other.tz.key,
            other.anchor,
        )

    def __hash__(self) -> int:
        return hash((self.expression, self.tz.key, self.anchor))

    @property
    def interval(self) -> timedelta | None:
        """The period of an ``@every`` schedule, ``None`` for the others."""
        return self._interval

    @property
    def instant(self) -> datetime | None:
        """The one firing instant of an ``@at`` schedule (UTC), ``None`` for the others."""
        return self._at

    # -- wall clock <-> instant ------------------------------------------------------------

    def _offset(self, instant: datetime) -> timedelta:
        offset = instant.astimezone(self.tz).utcoffset()
        assert offset is not None
        return offset

    def _transition(self, lo: datetime, hi: datetime) -> datetime:
        """First whole-second instant in ``(lo, hi]`` whose UTC offset differs from ``lo``'s."""
        before = self._offset(lo)
        lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
        while hi_s - lo_s > 1:
            mid = (lo_s + hi_s) // 2
            if self._offset(datetime.fromtimestamp(mid, UTC)) == before:
                lo_s = mid
            else:
                hi_s = mid
        return datetime.fromtimestamp(hi_s, UTC)

    def _to_instant(self, wall: datetime) -> datetime:
        """Map a naive local time to UTC: gaps go to the gap's end, repeats to fold=0."""
        first = wall.replace(tzinfo=self.tz).astimezone(UTC)
        if first.astimezone(self.tz).replace(tzinfo=None) == wall:
            return first
        # Nonexistent: fold=0 read it with the offset before the gap (too late), fold=1 with
        # the offset after it (too early); the transition between the two ends the gap.
        early = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        return self._transition(early, first)

    def _wall(self, instant: datetime) -> datetime:
        return instant.astimezone(self.tz).replace(tzinfo=None, fold=0)

    def _floor_wall(self, instant: datetime) -> datetime:
        """The latest naive local time whose instant is at or before ``instant``."""
        wall = self._wall(instant)
        first = self._to_instant(wall)
        if first == instant.astimezone(UTC):
            return wall
        # ``instant`` is the second occurrence of a repeated time: every wall time up to the
        # end of the repeated window maps to its first occurrence, which is earlier.
        end_of_first_pass = self._transition(first, instant)
        return wall + (end_of_first_pass - first) - _SECOND

    @staticmethod
    def _check_aware(name: str, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
        return value.astimezone(UTC)

    # -- queries ---------------------------------------------------------------------------

    def next_after(self, t: datetime) -> datetime | None:
        """The first firing instant strictly after ``t`` (UTC); ``None`` when there is none
        (an ``@at`` schedule whose instant has passed)."""
        t = self._check_aware("t", t)
        if self._at is not None:
            return self._at if self._at > t else None
        if self._interval is not None:
            return self.anchor + ((t - self.anchor) // self._interval + 1) * self._interval
        assert self._cron is not None
        wall = self._cron.first_after(self._floor_wall(t), lambda w: self._to_instant(w) > t)
        return self._to_instant(wall)

    def prev_at_or_before(self, t: datetime) -> datetime | None:
        """The last firing instant at or before ``t`` (UTC), ``None`` if there is none."""
        t = self._check_aware("t", t)
        if self._at is not None:
            return self._at if self._at <= t else None
        if self._interval is not None:
            return self.anchor + ((t - self.anchor) // self._interval) * self._interval
        assert self._cron is not None
        wall = self._floor_wall(t).replace(microsecond=0) + _SECOND
        try:
            previous = self._cron.last_before(wall)
        except CroniterBadDateError:
            return None
        return self._to_instant(previous)

    def iter_between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Yield the firing instants in ``(start, end]`` in order, each once."""
        start = self._check_aware("start", start)
        end = self._check_aware("end", end)
        if self._at is not None:
            if start < self._at <= end:
                yield self._at
            return
        if self._interval is not None:
            instant = self.next_after(start)
            assert instant is not None
            while instant <= end:
                yield instant
                instant += self._interval
            return
        assert self._cron is not None
        it = self._cron.iterator(self._floor_wall(start))
        last = start
        while True:
            instant = self._to_instant(it.get_next(datetime))
            if instant > end:
                return
            if instant > last:  # times in one DST gap collapse into a single instant
                yield instant
                last = instant

    def count_between(self, start: datetime, end: datetime) -> int:
        """How many instants ``iter_between(start, end)`` yields, computed without listing them.

        Cron schedules are counted per local day from the field sets (O(days) instead of
        O(firings)); a month of an every-second schedule costs 31 day steps, not 2.6 M.
        """
        start = self._check_aware("start", start)
        end = self._check_aware("end", end)
        if end <= start:
            return 0
        if self._at is not None:
            return 1 if start < self._at <= end else 0
        if self._interval is not None:
            return (end - self.anchor) // self._interval - (start - self.anchor) // self._interval
        assert self._cron is not None
        cron = self._cron
        total = cron.count_naive(self._floor_wall(start), self._floor_wall(end))
        for gap_end in self._gap_ends(start, end):
            # The matches inside the gap and at its end are one firing, at the gap's end.
            wall_end = self._wall(gap_end)
            wall_start = wall_end - (self._offset(gap_end) - self._offset(gap_end - _SECOND))
            collapsed = cron.count_naive(wall_start - _SECOND, wall_end)
            if collapsed:
                total -= collapsed - 1
        return total

    def _gap_ends(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Instants in ``(start, end]`` where the local clock jumps forward."""
        step = timedelta(hours=12)
        lo = start
        while lo < end:
            hi = min(lo + step, end)
            if self._offset(hi) > self._offset(lo):
                yield self._transition(lo, hi)
            lo = hi

    def wall_time_of(self, instant: datetime) -> datetime:
        """``instant`` as an aware datetime in the schedule's zone (for display)."""
        return self._check_aware("instant", instant).astimezone(self.tz)

"""ISO-8601 dates, times and date-times.

Accepted dates: calendar (2024-03-15, 20240315), ordinal (2024-075, 2024075),
week (2024-W11-5, 2024W115, 2024-W11 meaning its Monday) and month (2024-03, the 1st).
Accepted times: hh, hh:mm, hh:mm:ss with an optional fraction after "." or "," and an
optional UTC offset (Z, +hh, +hh:mm, +hhmm); the basic forms without colons work too.
"""
from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Callable, Optional

from .calendar import is_leap_year, iso_week_monday, iso_weeks_in_year
from .errors import DateParseError


def _calendar_date(text: str, year: str, month: str, day: str) -> date:
    try:
        return date(int(year), int(month), int(day))
    except ValueError as exc:
        raise DateParseError(f"invalid date {text!r}: {exc}") from None


def _week_date(text: str, year: str, week: str, weekday: Optional[str]) -> date:
    iso_year, iso_week = int(year), int(week)
    weeks = iso_weeks_in_year(iso_year)
    if not 1 <= iso_week <= weeks:
        raise DateParseError(f"invalid week date {text!r}: {iso_year} has weeks 1..{weeks}")
    return iso_week_monday(iso_year, iso_week) + timedelta(days=int(weekday or 1) - 1)


def _ordinal_date(text: str, year: str, ordinal: str) -> date:
    iso_year, day_of_year = int(year), int(ordinal)
    length = 366 if is_leap_year(iso_year) else 365
    if not 1 <= day_of_year <= length:
        raise DateParseError(f"invalid ordinal date {text!r}: {iso_year} has days 1..{length}")
    return date(iso_year, 1, 1) + timedelta(days=day_of_year - 1)


def _month_date(text: str, year: str, month: str) -> date:
    return _calendar_date(text, year, month, "01")


# Every form must match the whole text, and the digit counts differ (8 for basic calendar,
# 7 for basic ordinal, 3 after the dash for ordinal, 2 for month), so no form shadows another.
_DATE_FORMS: tuple[tuple[re.Pattern[str], Callable[..., date]], ...] = (
    (re.compile(r"(\d{4})-(\d{2})-(\d{2})"), _calendar_date),
    (re.compile(r"(\d{4})(\d{2})(\d{2})"), _calendar_date),
    (re.compile(r"(\d{4})-W(\d{2})(?:-([1-7]))?"), _week_date),
    (re.compile(r"(\d{4})W(\d{2})([1-7])?"), _week_date),
    (re.compile(r"(\d{4})-(\d{3})"), _ordinal_date),
    (re.compile(r"(\d{4})(\d{3})"), _ordinal_date),
    (re.compile(r"(\d{4})-(\d{2})"), _month_date),
)

_TIME_RE = re.compile(
    r"(?P<hour>\d{2})"
    r"(?::?(?P<minute>\d{2})(?::?(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?)?"
    r"(?P<offset>Z|[+-]\d{2}(?::?\d{2})?)?"
)

_DATETIME_SEPARATOR = re.compile(r"[Tt ]")


def parse_date(text: str) -> date:
    stripped = text.strip()
    for pattern, build in _DATE_FORMS:
        match = pattern.fullmatch(stripped)
        if match:
            return build(text, *match.groups())
    raise DateParseError(f"not an ISO-8601 date: {text!r}")


def parse_fraction(digits: str) -> int:
    """Decimal fraction digits of a second → microseconds ("5" is half a second).

    Digits past the sixth are dropped rather than rounded, so a parsed time never spills
    into the next second.
    """
    return int(digits[:6].ljust(6, "0"))


def parse_offset(text: str) -> timezone:
    """'Z', '+05', '+05:30', '-0330' → a fixed-offset timezone."""
    if text == "Z":
        return timezone.utc
    sign = -1 if text.startswith("-") else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise DateParseError(f"UTC offset out of range: {text!r}")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _check_range(text: str, name: str, value: int, highest: int) -> None:
    if value > highest:
        raise DateParseError(f"{name} out of range in {text!r}: {value} (at most {highest})")


def parse_time(text: str) -> time:
    match = _TIME_RE.fullmatch(text.strip())
    if not match:
        raise DateParseError(f"not an ISO-8601 time: {text!r}")
    hour = int(match["hour"])
    minute = int(match["minute"] or 0)
    second = int(match["second"] or 0)
    _check_range(text, "hour", hour, 23)
    _check_range(text, "minute", minute, 59)
    # No leap seconds: Python's time type cannot represent 23:59:60.
    _check_range(text, "second", second, 59)
    microsecond = parse_fraction(match["fraction"]) if match["fraction"] else 0
    tzinfo = parse_offset(match["offset"]) if match["offset"] else None
    return time(hour, minute, second, microsecond, tzinfo=tzinfo)


def parse_datetime(text: str) -> datetime:
    """A date, optionally followed by 'T' (or a space) and a time; a bare date means midnight."""
    stripped = text.strip()
    parts = _DATETIME_SEPARATOR.split(stripped, maxsplit=1)
    if len(parts) == 1:
        return datetime.combine(parse_date(stripped), time())
    date_text, time_text = parts
    try:
        return datetime.combine(parse_date(date_text), parse_time(time_text))
    except DateParseError as exc:
        raise DateParseError(f"not an ISO-8601 date-time: {text!r} ({exc})") from None

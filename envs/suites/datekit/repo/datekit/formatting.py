"""Dates and times back to text: ISO-8601, patterns like 'dddd D MMMM YYYY', and 'in 3 days'."""
from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Callable, Optional, Union

MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Largest first: humanize picks the first unit the delta reaches. Months and years are the
# usual 30/365-day approximations; humanize is for people, not for arithmetic.
_HUMAN_UNITS = (
    ("year", 365 * 86400),
    ("month", 30 * 86400),
    ("week", 7 * 86400),
    ("day", 86400),
    ("hour", 3600),
    ("minute", 60),
)


def format_offset(offset: Optional[timedelta]) -> str:
    """UTC offset → 'Z', '+05:30' or '-03:30'; '' for naive values."""
    if offset is None:
        return ""
    total_minutes = int(offset.total_seconds()) // 60
    if total_minutes == 0:
        return "Z"
    sign = "-" if total_minutes < 0 else "+"
    hours, minutes = divmod(abs(total_minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def _format_clock(value: Union[time, datetime]) -> str:
    text = f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    if value.microsecond:
        # Trailing zeros carry no information: 10:00:00.5, not 10:00:00.500000.
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + format_offset(value.utcoffset())


def format_iso(value: Union[date, time, datetime]) -> str:
    """The extended ISO-8601 form, which parse_date / parse_time / parse_datetime read back."""
    if isinstance(value, datetime):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{_format_clock(value)}"
    if isinstance(value, date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    if isinstance(value, time):
        return _format_clock(value)
    raise TypeError(f"format_iso expects a date, time or datetime, got {type(value).__name__}")


_TOKENS: dict[str, Callable[..., str]] = {
    "YYYY": lambda v: f"{v.year:04d}",
    "YY": lambda v: f"{v.year % 100:02d}",
    "MMMM": lambda v: MONTH_NAMES[v.month - 1],
    "MMM": lambda v: MONTH_NAMES[v.month - 1][:3],
    "MM": lambda v: f"{v.month:02d}",
    "M": lambda v: str(v.month),
    "DD": lambda v: f"{v.day:02d}",
    "D": lambda v: str(v.day),
    "dddd": lambda v: WEEKDAY_NAMES[v.weekday()],
    "ddd": lambda v: WEEKDAY_NAMES[v.weekday()][:3],
    "HH": lambda v: f"{v.hour:02d}",
    "hh": lambda v: f"{v.hour % 12 or 12:02d}",
    "mm": lambda v: f"{v.minute:02d}",
    "ss": lambda v: f"{v.second:02d}",
    "A": lambda v: "AM" if v.hour < 12 else "PM",
    "Z": lambda v: format_offset(v.utcoffset()),
}
_TIME_TOKENS = {"HH", "hh", "mm", "ss", "A", "Z"}
# Longest alternatives first so 'MMMM' is not read as 'MM' twice; '[...]' is literal text.
_TOKEN_RE = re.compile(r"\[([^\]]*)\]|" + "|".join(sorted(_TOKENS, key=len, reverse=True)))


def format_date(value: Union[date, datetime], pattern: str) -> str:
    """Render `value` with tokens YYYY YY MMMM MMM MM M DD D dddd ddd HH hh mm ss A Z; [text] is literal."""
    def render(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return match.group(1)
        token = match.group(0)
        if token in _TIME_TOKENS and not isinstance(value, datetime):
            raise ValueError(f"pattern token {token!r} needs a datetime, got a {type(value).__name__}")
        return _TOKENS[token](value)

    return _TOKEN_RE.sub(render, pattern)


def humanize(delta: timedelta) -> str:
    """'3 days ago' for negative deltas, 'in 2 hours' for positive ones, 'just now' under 45 s.

    The count is the largest unit the delta reaches, rounded down, so the phrase reads back
    with parse_relative to a moment no later than the original one.
    """
    seconds = delta.total_seconds()
    magnitude = abs(seconds)
    if magnitude < 45:
        return "just now"
    unit, count = "minute", 1  # 45..59 s reads as a minute
    for name, size in _HUMAN_UNITS:
        if magnitude >= size:
            unit, count = name, int(magnitude // size)
            break
    label = unit if count == 1 else unit + "s"
    return f"{count} {label} ago" if seconds < 0 else f"in {count} {label}"

"""Human phrases ('3 days ago', 'in 2 weeks', 'next friday') resolved against a reference date.

The reference is always passed in, never read from the clock, so the same text gives the
same answer in tests, in logs and on another machine.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta

from .calendar import DateLike
from .duration import Duration, shift
from .errors import DateParseError
from .formatting import WEEKDAY_NAMES
from .iso import parse_date, parse_datetime

_NAMED_DAYS = {"today": 0, "yesterday": -1, "tomorrow": 1}
_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}
_UNIT_FIELDS = {
    "second": "seconds", "minute": "minutes", "hour": "hours", "day": "days",
    "week": "weeks", "month": "months", "year": "years",
}
_COUNTED_RE = re.compile(
    r"(?:(?P<future>in) )?(?P<count>\d+|" + "|".join(_NUMBER_WORDS) + r") "
    r"(?P<unit>" + "|".join(_UNIT_FIELDS) + r")s?(?: (?P<past>ago))?"
)
_WEEKDAY_RE = re.compile(
    r"(?P<direction>next|last|this) (?P<weekday>" + "|".join(name.lower() for name in WEEKDAY_NAMES) + r")"
)


def _counted(reference: DateLike, phrase: str, match: re.Match[str]) -> DateLike:
    if bool(match["future"]) == bool(match["past"]):
        raise DateParseError(f"say either 'in N units' or 'N units ago': {phrase!r}")
    count_text = match["count"]
    count = int(count_text) if count_text.isdigit() else _NUMBER_WORDS[count_text]
    duration = Duration(**{_UNIT_FIELDS[match["unit"]]: count})
    try:
        return shift(reference, duration, sign=-1 if match["past"] else 1)
    except ValueError as exc:
        raise DateParseError(f"cannot resolve {phrase!r}: {exc}") from None


def _weekday(reference: DateLike, direction: str, weekday_name: str) -> DateLike:
    target = [name.lower() for name in WEEKDAY_NAMES].index(weekday_name)
    today = reference.weekday()
    if direction == "next":
        # "next friday" said on a Friday means a week later, never today.
        days = (target - today) % 7 or 7
    elif direction == "last":
        days = -((today - target) % 7 or 7)
    else:
        # "this friday": the one in the current Monday-to-Sunday week, past or future.
        days = target - today
    return reference + timedelta(days=days)


def parse_relative(text: str, reference: DateLike) -> DateLike:
    """Resolve `text` against `reference` (a date or a datetime; the result has the same type).

    Understands 'today', 'yesterday', 'tomorrow', 'N <unit>s ago', 'in N <unit>s'
    (N may be a digit string or a word up to 'ten', or 'a'/'an'), 'next|last|this <weekday>'.
    Anything else is tried as ISO-8601.
    """
    if not isinstance(reference, date):
        raise TypeError(f"reference must be a date or datetime, got {type(reference).__name__}")
    phrase = " ".join(text.lower().split())
    if phrase in _NAMED_DAYS:
        return reference + timedelta(days=_NAMED_DAYS[phrase])
    counted = _COUNTED_RE.fullmatch(phrase)
    if counted:
        return _counted(reference, phrase, counted)
    weekday = _WEEKDAY_RE.fullmatch(phrase)
    if weekday:
        return _weekday(reference, weekday["direction"], weekday["weekday"])
    try:
        return parse_datetime(text) if isinstance(reference, datetime) else parse_date(text)
    except DateParseError:
        raise DateParseError(f"not a relative or ISO-8601 date: {text!r}") from None

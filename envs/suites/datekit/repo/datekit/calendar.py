"""Calendar facts and month arithmetic that the parsers and formatters share."""
from __future__ import annotations

from datetime import date, timedelta
from typing import TypeVar

_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# A date or a datetime: month arithmetic and relative dates return the type they were given.
DateLike = TypeVar("DateLike", bound=date)


def is_leap_year(year: int) -> bool:
    """Gregorian rule: every 4th year, except centuries that are not divisible by 400."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_in_month(year: int, month: int) -> int:
    if not 1 <= month <= 12:
        raise ValueError(f"month must be in 1..12, got {month}")
    if month == 2 and is_leap_year(year):
        return 29
    return _DAYS_IN_MONTH[month - 1]


def add_months(value: DateLike, months: int) -> DateLike:
    """Shift by whole calendar months, clamping the day to the target month's length.

    Jan 31 + 1 month is Feb 29 in a leap year (Feb 28 otherwise) rather than an error or a
    date in March: that is what people mean by "one month later". Works for dates and datetimes.
    """
    year, month_index = divmod(value.year * 12 + (value.month - 1) + months, 12)
    month = month_index + 1
    day = min(value.day, days_in_month(year, month))
    return value.replace(year=year, month=month, day=day)


def iso_week_monday(year: int, week: int) -> date:
    """The Monday that starts ISO week `week` of ISO year `year`."""
    # Week 1 is the week that contains January 4th (so it holds the year's first Thursday).
    jan4 = date(year, 1, 4)
    week1_monday = jan4 - timedelta(days=jan4.isoweekday() - 1)
    return week1_monday + timedelta(weeks=week - 1)


def iso_weeks_in_year(year: int) -> int:
    """52 or 53: December 28th always lies in the year's last ISO week."""
    return date(year, 12, 28).isocalendar()[1]

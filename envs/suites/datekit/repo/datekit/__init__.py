"""datekit: ISO-8601 parsing and formatting, durations, and human relative dates."""
from .calendar import add_months, days_in_month, is_leap_year, iso_week_monday, iso_weeks_in_year
from .duration import Duration, format_duration, parse_duration, shift
from .errors import DateParseError
from .formatting import format_date, format_iso, format_offset, humanize
from .iso import parse_date, parse_datetime, parse_offset, parse_time
from .relative import parse_relative

__all__ = [
    "DateParseError", "Duration", "add_months", "days_in_month", "format_date", "format_duration",
    "format_iso", "format_offset", "humanize", "is_leap_year", "iso_week_monday", "iso_weeks_in_year",
    "parse_date", "parse_datetime", "parse_duration", "parse_offset", "parse_relative", "parse_time", "shift",
]

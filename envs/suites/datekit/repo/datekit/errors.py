"""The one exception datekit raises for bad input."""


class DateParseError(ValueError):
    """Text that is not a valid date, time, duration or relative phrase; the message quotes it."""

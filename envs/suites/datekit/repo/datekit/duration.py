"""ISO-8601 durations (P1Y2M10DT2H30M, P2W, PT0.5S) and calendar-aware arithmetic."""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Union

from .calendar import DateLike, add_months
from .errors import DateParseError

_DURATION_RE = re.compile(
    r"P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:[.,]\d+)?)S)?)?"
)


@dataclass(frozen=True)
class Duration:
    """A duration as written: years and months stay separate because their length varies."""

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: float = 0

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) < 0:
                raise ValueError(f"Duration.{field.name} must not be negative")

    @property
    def has_calendar_part(self) -> bool:
        return bool(self.years or self.months)

    @property
    def has_clock_part(self) -> bool:
        return bool(self.hours or self.minutes or self.seconds)

    def to_timedelta(self) -> timedelta:
        """The exact length; refuses years and months, whose length depends on the start date."""
        if self.has_calendar_part:
            raise ValueError(f"{format_duration(self)} has years or months, which have no fixed length; use shift()")
        return timedelta(
            weeks=self.weeks,
            days=self.days,
            hours=self.hours,
            minutes=self.minutes,
            seconds=self.seconds,
        )


def parse_duration(text: str) -> Duration:
    stripped = text.strip()
    match = _DURATION_RE.fullmatch(stripped)
    # Every component is optional in the pattern, but ISO 8601 wants at least one, and a
    # "T" must be followed by a time component ("P1DT" is malformed).
    if match is None or not any(match.groupdict().values()) or stripped.endswith("T"):
        raise DateParseError(f"not an ISO-8601 duration: {text!r}")
    values = {name: int(value) for name, value in match.groupdict().items() if value and name != "seconds"}
    if match["seconds"]:
        # ISO 8601 allows a comma as the decimal sign, as in parse_time.
        values["seconds"] = float(match["seconds"].replace(",", "."))
    return Duration(**values)


def _format_seconds(seconds: float) -> str:
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{seconds:.6f}".rstrip("0")


def _from_timedelta(delta: timedelta) -> Duration:
    if delta < timedelta(0):
        raise ValueError(f"cannot format a negative duration: {delta!r}")
    hours, rest = divmod(delta.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return Duration(days=delta.days, hours=hours, minutes=minutes, seconds=seconds + delta.microseconds / 1_000_000)


def format_duration(value: Union[Duration, timedelta]) -> str:
    """Duration or timedelta → ISO-8601 text; zero is 'PT0S' (the empty 'P' is not valid)."""
    duration = _from_timedelta(value) if isinstance(value, timedelta) else value
    date_part = "".join(
        f"{count}{unit}"
        for count, unit in ((duration.years, "Y"), (duration.months, "M"), (duration.weeks, "W"), (duration.days, "D"))
        if count
    )
    time_part = "".join(
        f"{count}{unit}" for count, unit in ((duration.hours, "H"), (duration.minutes, "M")) if count
    )
    if duration.seconds:
        time_part += f"{_format_seconds(duration.seconds)}S"
    if not date_part and not time_part:
        return "PT0S"
    return "P" + date_part + ("T" + time_part if time_part else "")


def shift(value: DateLike, duration: Duration, *, sign: int = 1) -> DateLike:
    """value + duration (value - duration with sign=-1).

    The calendar part goes first and clamps to the month's end (2024-01-31 + P1M = 2024-02-29),
    then the exact part is added. A plain date only accepts whole days.
    """
    if sign not in (1, -1):
        raise ValueError(f"sign must be 1 or -1, got {sign}")
    if duration.has_clock_part and not isinstance(value, datetime):
        raise ValueError(f"cannot shift a date by {format_duration(duration)}: it has hours, minutes or seconds")
    months = sign * (duration.years * 12 + duration.months)
    shifted = add_months(value, months) if months else value
    exact = Duration(weeks=duration.weeks, days=duration.days, hours=duration.hours,
                     minutes=duration.minutes, seconds=duration.seconds).to_timedelta()
    return shifted + sign * exact

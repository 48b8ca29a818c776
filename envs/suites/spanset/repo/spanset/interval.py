"""Half-open intervals [start, end) over any ordered numbers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union


class InvalidInterval(ValueError):
    """An interval whose end comes before its start, or whose bounds are not comparable."""


@dataclass(frozen=True, order=True)
class Interval:
    """[start, end): contains `start`, not `end`. `start == end` is the empty interval."""

    start: Any
    end: Any

    def __post_init__(self) -> None:
        try:
            backwards = self.end < self.start
        except TypeError:
            raise InvalidInterval(f"bounds {self.start!r} and {self.end!r} are not comparable") from None
        if backwards:
            raise InvalidInterval(f"end {self.end!r} is before start {self.start!r}")

    @property
    def length(self) -> Any:
        return self.end - self.start

    @property
    def is_empty(self) -> bool:
        return self.start == self.end

    def contains_point(self, point: Any) -> bool:
        return self.start <= point < self.end

    def contains(self, other: "Interval") -> bool:
        """True when `other` lies entirely inside this interval."""
        return self.start <= other.start and other.end <= self.end

    def overlaps(self, other: "Interval") -> bool:
        """True when the two share at least one point; touching ends ([1,3) and [3,5)) do not."""
        if self.is_empty or other.is_empty:
            return False
        return self.start < other.end and other.start < self.end

    def touches(self, other: "Interval") -> bool:
        """True when one ends exactly where the other starts."""
        return self.end == other.start or other.end == self.start

    def intersection(self, other: "Interval") -> Optional["Interval"]:
        if not self.overlaps(other):
            return None
        return Interval(max(self.start, other.start), min(self.end, other.end))

    def subtract(self, other: "Interval") -> list["Interval"]:
        """What is left of this interval after removing `other`: zero, one or two pieces."""
        if not self.overlaps(other):
            return [self]
        pieces = []
        if self.start < other.start:
            pieces.append(Interval(self.start, other.start))
        if other.end < self.end:
            pieces.append(Interval(other.end, self.end))
        return pieces

    def __str__(self) -> str:
        return f"[{self.start}, {self.end})"


IntervalLike = Union[Interval, Sequence[Any]]


def as_interval(value: IntervalLike) -> Interval:
    """Accept an Interval or a (start, end) pair, so public functions take either."""
    if isinstance(value, Interval):
        return value
    try:
        start, end = value
    except (TypeError, ValueError):
        raise InvalidInterval(f"expected an Interval or a (start, end) pair, got {value!r}") from None
    return Interval(start, end)

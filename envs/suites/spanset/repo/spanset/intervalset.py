"""IntervalSet: a set of points stored as sorted, disjoint, non-touching intervals."""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any, Iterable, Iterator, Optional

from spanset.interval import Interval, IntervalLike, as_interval
from spanset.merge import merge_intervals


class IntervalSet:
    """Set algebra over half-open intervals.

    The invariant, restored after every change: intervals are sorted, non-empty, and no two
    overlap or touch (touching ones are merged), so each set has one canonical form and
    `==` compares the points covered.
    """

    def __init__(self, intervals: Iterable[IntervalLike] = ()):
        self._intervals: list[Interval] = merge_intervals(intervals)

    @classmethod
    def _from_normalized(cls, intervals: list[Interval]) -> "IntervalSet":
        result = cls()
        result._intervals = intervals
        return result

    # --- queries --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Interval]:
        return iter(self._intervals)

    def __len__(self) -> int:
        """The number of disjoint intervals (not the number of points)."""
        return len(self._intervals)

    def __bool__(self) -> bool:
        return bool(self._intervals)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntervalSet):
            return NotImplemented
        return self._intervals == other._intervals

    def __repr__(self) -> str:
        return f"IntervalSet([{', '.join(str(iv) for iv in self._intervals)}])"

    def __contains__(self, point: Any) -> bool:
        # The only candidate is the last interval starting at or before the point.
        index = bisect_right([iv.start for iv in self._intervals], point) - 1
        return index >= 0 and self._intervals[index].contains_point(point)

    def covers(self, interval: IntervalLike) -> bool:
        """True when every point of `interval` is in the set."""
        target = as_interval(interval)
        if target.is_empty:
            return True
        return any(iv.contains(target) for iv in self._intervals)

    @property
    def total_length(self) -> Any:
        return sum((iv.length for iv in self._intervals), 0)

    def span(self) -> Optional[Interval]:
        """The smallest interval covering the whole set, or None when empty."""
        if not self._intervals:
            return None
        return Interval(self._intervals[0].start, self._intervals[-1].end)

    # --- updates --------------------------------------------------------------------------

    def add(self, interval: IntervalLike) -> None:
        self._intervals = merge_intervals([*self._intervals, as_interval(interval)])

    def remove(self, interval: IntervalLike) -> None:
        """Remove the points of `interval`; parts of the set outside it stay."""
        cut = as_interval(interval)
        if cut.is_empty:
            return
        # Intervals are disjoint and sorted, so only a contiguous run can be affected: from
        # the last one starting before the cut up to those starting before its end.
        starts = [iv.start for iv in self._intervals]
        low = max(bisect_left(starts, cut.start) - 1, 0)
        high = bisect_left(starts, cut.end)
        kept: list[Interval] = []
        for iv in self._intervals[low:high]:
            kept.extend(iv.subtract(cut))
        self._intervals[low:high] = kept

    # --- algebra --------------------------------------------------------------------------

    def union(self, other: "IntervalSet") -> "IntervalSet":
        return IntervalSet([*self._intervals, *other._intervals])

    def intersection(self, other: "IntervalSet") -> "IntervalSet":
        result: list[Interval] = []
        i = j = 0
        a_list, b_list = self._intervals, other._intervals
        while i < len(a_list) and j < len(b_list):
            a, b = a_list[i], b_list[j]
            common = a.intersection(b)
            if common is not None:
                result.append(common)
            # Whichever ends first can meet nothing further in the other list.
            if a.end < b.end:
                i += 1
            else:
                j += 1
        return IntervalSet._from_normalized(result)

    def difference(self, other: "IntervalSet") -> "IntervalSet":
        result = IntervalSet._from_normalized(list(self._intervals))
        for iv in other._intervals:
            result.remove(iv)
        return result

    def complement(self, within: IntervalLike) -> "IntervalSet":
        """The points of `within` that are not in this set."""
        return IntervalSet([within]).difference(self)

    __or__ = union
    __and__ = intersection
    __sub__ = difference

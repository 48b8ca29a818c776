"""Merge overlapping intervals into a sorted list of disjoint ones."""
from __future__ import annotations

from typing import Iterable

from spanset.interval import Interval, IntervalLike, as_interval


def merge_intervals(intervals: Iterable[IntervalLike], *, merge_adjacent: bool = True) -> list[Interval]:
    """Sorted, disjoint intervals covering exactly the same points as the input.

    Empty intervals cover no points and are dropped. With `merge_adjacent`, touching
    intervals ([1,3) and [3,5)) become one ([1,5)); without it they stay separate.
    """
    ordered = sorted(iv for iv in map(as_interval, intervals) if not iv.is_empty)
    merged: list[Interval] = []
    for iv in ordered:
        if merged:
            current = merged[-1]
            if iv.start < current.end or (merge_adjacent and iv.start == current.end):
                merged[-1] = Interval(current.start, max(current.end, iv.end))
                continue
        merged.append(iv)
    return merged

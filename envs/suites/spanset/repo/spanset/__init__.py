"""spanset: half-open intervals, an interval tree and interval sets, in pure Python."""
from spanset.interval import Interval, InvalidInterval, as_interval
from spanset.intervalset import IntervalSet
from spanset.merge import merge_intervals
from spanset.tree import Entry, IntervalTree

__all__ = ["Entry", "Interval", "IntervalSet", "IntervalTree", "InvalidInterval", "as_interval", "merge_intervals"]
__version__ = "1.0.0"

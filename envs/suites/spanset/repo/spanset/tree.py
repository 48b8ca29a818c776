"""IntervalTree: an AVL tree of intervals, augmented with each subtree's largest end.

Entries are ordered by (start, end, insertion number), so equal intervals with different
data can coexist. Every node stores `max_end`, the largest end in its subtree, which lets
overlap and point queries skip subtrees that end before the query begins: O(log n + k).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

from spanset.interval import Interval, IntervalLike, as_interval
from spanset.merge import merge_intervals


@dataclass(frozen=True)
class Entry:
    interval: Interval
    data: Any = None

    @property
    def start(self) -> Any:
        return self.interval.start

    @property
    def end(self) -> Any:
        return self.interval.end


class _Node:
    __slots__ = ("entry", "key", "left", "right", "height", "max_end")

    def __init__(self, entry: Entry, key: tuple):
        self.entry = entry
        self.key = key
        self.left: Optional[_Node] = None
        self.right: Optional[_Node] = None
        self.height = 1
        self.max_end = entry.end


def _height(node: Optional[_Node]) -> int:
    return node.height if node else 0


def _update(node: _Node) -> None:
    """Recompute height and max_end from the children (which must already be correct)."""
    node.height = 1 + max(_height(node.left), _height(node.right))
    node.max_end = node.entry.end
    for child in (node.left, node.right):
        if child is not None and child.max_end > node.max_end:
            node.max_end = child.max_end


def _rotate_right(y: _Node) -> _Node:
    x = y.left
    assert x is not None
    y.left = x.right
    x.right = y
    _update(y)
    _update(x)
    return x


def _rotate_left(x: _Node) -> _Node:
    y = x.right
    assert y is not None
    x.right = y.left
    y.left = x
    _update(x)
    _update(y)
    return y


def _rebalance(node: _Node) -> _Node:
    _update(node)
    balance = _height(node.left) - _height(node.right)
    if balance > 1:
        assert node.left is not None
        if _height(node.left.left) < _height(node.left.right):
            node.left = _rotate_left(node.left)
        return _rotate_right(node)
    if balance < -1:
        assert node.right is not None
        if _height(node.right.right) < _height(node.right.left):
            node.right = _rotate_right(node.right)
        return _rotate_left(node)
    return node


def _insert(node: Optional[_Node], new: _Node) -> _Node:
    if node is None:
        return new
    if new.key < node.key:
        node.left = _insert(node.left, new)
    else:
        node.right = _insert(node.right, new)
    return _rebalance(node)


def _pop_min(node: _Node) -> tuple[Optional[_Node], _Node]:
    """Detach the leftmost node; returns (new subtree root, detached node)."""
    if node.left is None:
        return node.right, node
    node.left, smallest = _pop_min(node.left)
    return _rebalance(node), smallest


def _equal_nodes(node: Optional[_Node], bounds: tuple) -> Iterator[_Node]:
    """Nodes whose (start, end) equals `bounds`, in order; they differ only by insertion number."""
    if node is None:
        return
    here = node.key[:2]
    if bounds <= here:
        yield from _equal_nodes(node.left, bounds)
    if bounds == here:
        yield node
    if bounds >= here:
        yield from _equal_nodes(node.right, bounds)


def _delete(node: Optional[_Node], key: tuple) -> Optional[_Node]:
    if node is None:
        return None
    if key < node.key:
        node.left = _delete(node.left, key)
    elif key > node.key:
        node.right = _delete(node.right, key)
    else:
        if node.left is None:
            return node.right
        if node.right is None:
            return node.left
        right, successor = _pop_min(node.right)
        successor.left, successor.right = node.left, right
        node = successor
    return _rebalance(node)


class IntervalTree:
    """A mutable collection of (interval, data) entries with fast overlap queries."""

    def __init__(self, entries: Iterable[Any] = ()):
        self._root: Optional[_Node] = None
        self._size = 0
        self._counter = itertools.count()
        for item in entries:
            if isinstance(item, Entry):
                self.add(item.interval, item.data)
            elif isinstance(item, Interval):
                self.add(item)
            else:
                self.add(*item)  # (start, end) or (start, end, data)

    # --- updates --------------------------------------------------------------------------

    def add(self, start_or_interval: Any, end: Any = None, data: Any = None) -> Entry:
        """add(Interval, data=None) or add(start, end, data=None); returns the stored Entry."""
        interval, data = self._interval_and_data(start_or_interval, end, data)
        entry = Entry(interval, data)
        node = _Node(entry, (interval.start, interval.end, next(self._counter)))
        self._root = _insert(self._root, node)
        self._size += 1
        return entry

    def remove(self, start_or_interval: Any, end: Any = None, data: Any = None) -> None:
        """Remove one entry with exactly this interval and data; KeyError if there is none."""
        interval, data = self._interval_and_data(start_or_interval, end, data)
        node = self._find(interval, data)
        if node is None:
            raise KeyError(f"no entry {interval} with data {data!r}")
        self._root = _delete(self._root, node.key)
        self._size -= 1

    def discard(self, start_or_interval: Any, end: Any = None, data: Any = None) -> bool:
        """Like remove, but returns False instead of raising when the entry is absent."""
        try:
            self.remove(start_or_interval, end, data)
        except KeyError:
            return False
        return True

    def clear(self) -> None:
        self._root = None
        self._size = 0

    @staticmethod
    def _interval_and_data(start_or_interval: Any, end: Any, data: Any) -> tuple[Interval, Any]:
        if isinstance(start_or_interval, Interval):
            # add(Interval, data): the second positional argument is the data.
            return start_or_interval, end if data is None else data
        return Interval(start_or_interval, end), data

    def _find(self, interval: Interval, data: Any) -> Optional[_Node]:
        for node in _equal_nodes(self._root, (interval.start, interval.end)):
            if node.entry.data == data:
                return node
        return None

    # --- queries --------------------------------------------------------------------------

    def overlap(self, start_or_interval: IntervalLike, end: Any = None) -> list[Entry]:
        """Entries sharing at least one point with the query, sorted by (start, end)."""
        query = as_interval(start_or_interval) if end is None else Interval(start_or_interval, end)
        found: list[Entry] = []
        self._collect(self._root, query.overlaps, query.start, lambda start: start >= query.end, found)
        return found

    def at(self, point: Any) -> list[Entry]:
        """Entries containing `point`, sorted by (start, end)."""
        found: list[Entry] = []
        self._collect(self._root, lambda iv: iv.contains_point(point), point, lambda start: start > point, found)
        return found

    def envelop(self, start_or_interval: IntervalLike, end: Any = None) -> list[Entry]:
        """Entries lying entirely inside the query."""
        query = as_interval(start_or_interval) if end is None else Interval(start_or_interval, end)
        return [e for e in self.overlap(query) if query.contains(e.interval)]

    def _collect(
        self,
        node: Optional[_Node],
        keep: Callable[[Interval], bool],
        lowest: Any,
        too_late: Callable[[Any], bool],
        found: list[Entry],
    ) -> None:
        """In-order walk over the entries `keep` accepts.

        A subtree whose every interval ends at or before `lowest` is skipped, and so is
        everything right of a node whose start is `too_late`: starts only grow to the right.
        """
        if node is None or node.max_end <= lowest:
            return
        self._collect(node.left, keep, lowest, too_late, found)
        if too_late(node.entry.start):
            return
        if keep(node.entry.interval):
            found.append(node.entry)
        self._collect(node.right, keep, lowest, too_late, found)

    def span(self) -> Optional[Interval]:
        """From the smallest start to the largest end, or None when empty."""
        if self._root is None:
            return None
        first = self._root
        while first.left is not None:
            first = first.left
        return Interval(first.entry.start, self._root.max_end)

    def merged(self, *, merge_adjacent: bool = True) -> list[Interval]:
        """The union of all entries as sorted disjoint intervals."""
        return merge_intervals((e.interval for e in self), merge_adjacent=merge_adjacent)

    def __iter__(self) -> Iterator[Entry]:
        stack, node = [], self._root
        while stack or node is not None:
            while node is not None:
                stack.append(node)
                node = node.left
            node = stack.pop()
            yield node.entry
            node = node.right

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def __contains__(self, interval: IntervalLike) -> bool:
        """True when some entry has exactly this interval (whatever its data)."""
        target = as_interval(interval)
        return next(_equal_nodes(self._root, (target.start, target.end)), None) is not None

    def height(self) -> int:
        return _height(self._root)

    def __repr__(self) -> str:
        return f"IntervalTree({len(self)} entries)"

"""A size-bounded least-recently-used cache with an eviction callback and statistics.

Entries live in an OrderedDict from least to most recently used. Subclasses that store
wrapped values (TTLCache) override three hooks: `_unwrap`, `_is_live` and `purge`.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable, Iterator, Optional

from lrukit.stats import CacheStats

EvictCallback = Callable[[Hashable, Any], None]
MISSING: Any = object()


def check_maxsize(maxsize: int) -> int:
    if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
        raise ValueError(f"maxsize must be a non-negative integer, got {maxsize!r}")
    return maxsize


class LRUCache:
    """Holds at most `maxsize` entries; inserting into a full cache evicts the least recently used.

    `on_evict(key, value)` is called for every entry the cache drops on its own (capacity
    or expiry), never for entries removed explicitly with `del`, `pop` or `clear`.
    """

    def __init__(self, maxsize: int = 128, *, on_evict: Optional[EvictCallback] = None):
        self.maxsize = check_maxsize(maxsize)
        self.stats = CacheStats()
        self._on_evict = on_evict
        self._data: "OrderedDict[Hashable, Any]" = OrderedDict()

    # --- hooks for subclasses that wrap stored values -------------------------------------

    def _unwrap(self, stored: Any) -> Any:
        return stored

    def _is_live(self, stored: Any) -> bool:
        return True

    def purge(self) -> int:
        """Drop entries that are no longer live; returns how many. Nothing expires here."""
        return 0

    # --- lookups --------------------------------------------------------------------------

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value for `key` (marking it most recently used), or `default`."""
        stored = self._data.get(key, MISSING)
        if stored is not MISSING and not self._is_live(stored):
            self._remove(key, expired=True)
            stored = MISSING
        if stored is MISSING:
            self.stats.misses += 1
            return default
        self._data.move_to_end(key)
        self.stats.hits += 1
        return self._unwrap(stored)

    def __getitem__(self, key: Hashable) -> Any:
        value = self.get(key, MISSING)
        if value is MISSING:
            raise KeyError(key)
        return value

    def peek(self, key: Hashable, default: Any = None) -> Any:
        """The value without changing recency or statistics."""
        stored = self._data.get(key, MISSING)
        if stored is MISSING or not self._is_live(stored):
            return default
        return self._unwrap(stored)

    def __contains__(self, key: Hashable) -> bool:
        stored = self._data.get(key, MISSING)
        return stored is not MISSING and self._is_live(stored)

    # --- updates --------------------------------------------------------------------------

    def set(self, key: Hashable, value: Any) -> None:
        self._store(key, value)

    def __setitem__(self, key: Hashable, value: Any) -> None:
        self.set(key, value)

    def _store(self, key: Hashable, stored: Any) -> None:
        if self.maxsize == 0:
            return  # a zero-size cache remembers nothing
        self._data[key] = stored
        self._data.move_to_end(key)
        self._evict_overflow()

    def _evict_overflow(self) -> None:
        while len(self._data) > self.maxsize:
            oldest = next(iter(self._data))
            self._remove(oldest, expired=False)

    def _remove(self, key: Hashable, *, expired: bool) -> None:
        stored = self._data.pop(key)
        if expired:
            self.stats.expirations += 1
        else:
            self.stats.evictions += 1
        if self._on_evict is not None:
            self._on_evict(key, self._unwrap(stored))

    def __delitem__(self, key: Hashable) -> None:
        del self._data[key]

    def pop(self, key: Hashable, default: Any = MISSING) -> Any:
        stored = self._data.pop(key, MISSING)
        if stored is MISSING or not self._is_live(stored):
            if default is MISSING:
                raise KeyError(key)
            return default
        return self._unwrap(stored)

    def clear(self) -> None:
        self._data.clear()

    def resize(self, maxsize: int) -> None:
        """Change the capacity; shrinking evicts the least recently used entries now."""
        self.maxsize = check_maxsize(maxsize)
        self._evict_overflow()

    # --- views ----------------------------------------------------------------------------

    def __len__(self) -> int:
        self.purge()
        return len(self._data)

    def keys(self) -> list[Hashable]:
        """Keys from least to most recently used."""
        self.purge()
        return list(self._data)

    def items(self) -> list[tuple[Hashable, Any]]:
        self.purge()
        return [(k, self._unwrap(s)) for k, s in self._data.items()]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.keys())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(maxsize={self.maxsize}, size={len(self._data)})"

"""An LRU cache whose entries also expire a fixed time after they were stored.

Time comes from an injectable clock (default `time.monotonic`), so expiry is testable
without sleeping. Expired entries are dropped lazily, on lookup or on `purge()`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional

from lrukit.lru import EvictCallback, LRUCache

Clock = Callable[[], float]


@dataclass(frozen=True)
class _Entry:
    value: Any
    expires_at: float


def _check_ttl(ttl: float) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return float(ttl)


class TTLCache(LRUCache):
    """LRU bound plus a time to live: an entry is gone once `clock() >= stored_at + ttl`."""

    def __init__(
        self,
        maxsize: int = 128,
        ttl: float = 60.0,
        *,
        clock: Clock = time.monotonic,
        on_evict: Optional[EvictCallback] = None,
    ):
        super().__init__(maxsize, on_evict=on_evict)
        self.ttl = _check_ttl(ttl)
        self._clock = clock

    def set(self, key: Hashable, value: Any, ttl: Optional[float] = None) -> None:
        """Store `value`; `ttl` overrides the cache's default for this entry only."""
        lifetime = self.ttl if ttl is None else _check_ttl(ttl)
        self._store(key, _Entry(value, self._clock() + lifetime))

    def _unwrap(self, stored: _Entry) -> Any:
        return stored.value

    def _is_live(self, stored: _Entry) -> bool:
        return self._clock() < stored.expires_at

    def purge(self) -> int:
        expired = [key for key, stored in self._data.items() if not self._is_live(stored)]
        for key in expired:
            self._remove(key, expired=True)
        return len(expired)

    def expires_in(self, key: Hashable) -> Optional[float]:
        """Seconds until `key` expires, or None if it is absent or already expired."""
        stored = self._data.get(key)
        if stored is None or not self._is_live(stored):
            return None
        return stored.expires_at - self._clock()

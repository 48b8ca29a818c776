"""Hit/miss/eviction counters shared by every cache in lrukit."""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0  # removed to make room (capacity)
    expirations: int = 0  # removed because their time to live ran out

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """Fraction of lookups that were hits; 0.0 before the first lookup."""
        if self.lookups == 0:
            return 0.0
        return self.hits / self.lookups

    def snapshot(self) -> "CacheStats":
        """A copy that later cache activity does not change."""
        return replace(self)

    def reset(self) -> None:
        self.hits = self.misses = self.evictions = self.expirations = 0

    def __str__(self) -> str:
        return (
            f"hits={self.hits} misses={self.misses} hit_rate={self.hit_rate:.1%} "
            f"evictions={self.evictions} expirations={self.expirations}"
        )

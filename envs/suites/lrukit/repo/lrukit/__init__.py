"""lrukit: LRU and TTL caches, a memoize decorator and cache statistics, in pure Python."""
from lrukit.lru import LRUCache
from lrukit.memoize import make_key, memoize
from lrukit.stats import CacheStats
from lrukit.ttl import TTLCache

__all__ = ["CacheStats", "LRUCache", "TTLCache", "make_key", "memoize"]
__version__ = "1.0.0"

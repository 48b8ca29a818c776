from lrukit import CacheStats, LRUCache


def test_initial_stats():
    stats = CacheStats()
    assert stats.lookups == 0 and stats.hit_rate == 0.0


def test_hits_and_misses_recorded():
    cache = LRUCache(2)
    cache["a"] = 1
    cache.get("a")
    cache.get("b")
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


def test_evictions_recorded():
    cache = LRUCache(1)
    cache["a"] = 1
    cache["b"] = 2
    assert cache.stats.evictions == 1


def test_snapshot_is_independent():
    cache = LRUCache(2)
    snap = cache.stats.snapshot()
    cache.get("x")
    assert snap.misses == 0 and cache.stats.misses == 1


def test_reset():
    stats = CacheStats(hits=3, misses=2, evictions=1, expirations=4)
    stats.reset()
    assert stats == CacheStats()


def test_str():
    assert str(CacheStats(hits=1, misses=1)) == "hits=1 misses=1 hit_rate=50.0% evictions=0 expirations=0"

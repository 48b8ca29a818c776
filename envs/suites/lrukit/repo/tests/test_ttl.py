import pytest

from lrukit import TTLCache


def test_value_available_before_ttl(clock):
    cache = TTLCache(10, ttl=30, clock=clock)
    cache["a"] = 1
    clock.advance(29)
    assert cache.get("a") == 1


def test_value_gone_after_ttl(clock):
    cache = TTLCache(10, ttl=30, clock=clock)
    cache["a"] = 1
    clock.advance(31)
    assert cache.get("a") is None
    assert "a" not in cache


def test_expired_lookup_counts_miss_and_expiration(clock):
    cache = TTLCache(10, ttl=5, clock=clock)
    cache["a"] = 1
    clock.advance(10)
    cache.get("a")
    assert cache.stats.misses == 1 and cache.stats.expirations == 1


def test_per_entry_ttl(clock):
    cache = TTLCache(10, ttl=100, clock=clock)
    cache.set("short", 1, ttl=5)
    cache.set("long", 2)
    clock.advance(50)
    assert cache.get("short") is None
    assert cache.get("long") == 2


def test_expires_in(clock):
    cache = TTLCache(10, ttl=30, clock=clock)
    cache["a"] = 1
    clock.advance(10)
    assert cache.expires_in("a") == pytest.approx(20)
    assert cache.expires_in("missing") is None


def test_lru_bound_still_applies(clock):
    cache = TTLCache(2, ttl=30, clock=clock)
    cache["a"] = 1
    cache["b"] = 2
    cache["c"] = 3
    assert "a" not in cache and cache.stats.evictions == 1


def test_purge_returns_count(clock):
    cache = TTLCache(10, ttl=30, clock=clock)
    cache["a"] = 1
    cache["b"] = 2
    clock.advance(40)
    cache["c"] = 3
    assert cache.purge() == 2
    assert cache.keys() == ["c"]


@pytest.mark.parametrize("bad", [0, -1, "5", None])
def test_invalid_ttl(bad):
    with pytest.raises(ValueError):
        TTLCache(10, ttl=bad)


def test_resetting_a_key_restarts_its_ttl(clock):
    cache = TTLCache(10, ttl=30, clock=clock)
    cache["a"] = 1
    clock.advance(20)
    cache["a"] = 2
    clock.advance(20)
    assert cache.get("a") == 2

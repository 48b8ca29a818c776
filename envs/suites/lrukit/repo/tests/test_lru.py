import pytest

from lrukit import LRUCache


def test_set_and_get():
    cache = LRUCache(2)
    cache["a"] = 1
    assert cache["a"] == 1
    assert cache.get("a") == 1


def test_get_missing_returns_default():
    cache = LRUCache(2)
    assert cache.get("x") is None
    assert cache.get("x", 5) == 5


def test_getitem_missing_raises_keyerror():
    with pytest.raises(KeyError):
        LRUCache(2)["nope"]


def test_evicts_least_recently_inserted():
    cache = LRUCache(2)
    cache["a"] = 1
    cache["b"] = 2
    cache["c"] = 3
    assert "a" not in cache
    assert cache.keys() == ["b", "c"]


def test_capacity_is_respected():
    cache = LRUCache(3)
    for i in range(10):
        cache[i] = i
    assert len(cache) == 3


def test_update_existing_key_does_not_evict():
    cache = LRUCache(2)
    cache["a"] = 1
    cache["b"] = 2
    cache["a"] = 10
    assert len(cache) == 2
    assert cache["a"] == 10 and cache["b"] == 2


def test_peek_does_not_change_order():
    cache = LRUCache(2)
    cache["a"] = 1
    cache["b"] = 2
    assert cache.peek("a") == 1
    cache["c"] = 3
    assert "a" not in cache


def test_contains_does_not_count_as_lookup():
    cache = LRUCache(2)
    cache["a"] = 1
    assert "a" in cache
    assert cache.stats.lookups == 0


def test_zero_size_cache_stores_nothing():
    cache = LRUCache(0)
    cache["a"] = 1
    assert len(cache) == 0 and cache.get("a") is None


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_invalid_maxsize(bad):
    with pytest.raises(ValueError):
        LRUCache(bad)


def test_on_evict_called_with_key_and_value():
    evicted = []
    cache = LRUCache(1, on_evict=lambda k, v: evicted.append((k, v)))
    cache["a"] = 1
    cache["b"] = 2
    assert evicted == [("a", 1)]


def test_explicit_delete_is_not_an_eviction():
    evicted = []
    cache = LRUCache(2, on_evict=lambda k, v: evicted.append(k))
    cache["a"] = 1
    del cache["a"]
    assert evicted == [] and cache.stats.evictions == 0


def test_pop():
    cache = LRUCache(2)
    cache["a"] = 1
    assert cache.pop("a") == 1
    assert cache.pop("a", None) is None
    with pytest.raises(KeyError):
        cache.pop("a")


def test_clear():
    cache = LRUCache(2)
    cache["a"] = 1
    cache.clear()
    assert len(cache) == 0


def test_resize_grow():
    cache = LRUCache(1)
    cache.resize(3)
    for i in range(3):
        cache[i] = i
    assert len(cache) == 3


def test_items_and_iteration_order():
    cache = LRUCache(3)
    cache["a"] = 1
    cache["b"] = 2
    assert cache.items() == [("a", 1), ("b", 2)]
    assert list(cache) == ["a", "b"]


def test_repr():
    cache = LRUCache(4)
    cache["a"] = 1
    assert repr(cache) == "LRUCache(maxsize=4, size=1)"

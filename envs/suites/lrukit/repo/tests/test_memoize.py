import pytest

from lrukit import LRUCache, make_key, memoize


def test_caches_results():
    calls = []

    @memoize
    def square(x):
        calls.append(x)
        return x * x

    assert square(3) == 9
    assert square(3) == 9
    assert calls == [3]


def test_configured_decorator_uses_maxsize():
    @memoize(maxsize=2)
    def ident(x):
        return x

    for i in range(5):
        ident(i)
    assert len(ident.cache) == 2


def test_cache_info_counts_hits_and_misses():
    @memoize
    def double(x):
        return 2 * x

    double(1)
    double(1)
    double(2)
    info = double.cache_info()
    assert (info.hits, info.misses) == (1, 2)


def test_cache_clear_resets():
    @memoize
    def double(x):
        return 2 * x

    double(1)
    double.cache_clear()
    assert len(double.cache) == 0 and double.cache_info().lookups == 0


def test_exceptions_are_not_cached():
    calls = []

    @memoize
    def flaky(x):
        calls.append(x)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return x

    with pytest.raises(RuntimeError):
        flaky(1)
    assert flaky(1) == 1
    assert calls == [1, 1]


def test_custom_cache_instance():
    store = LRUCache(10)

    @memoize(cache=store)
    def ident(x):
        return x

    ident(7)
    assert 7 in [k[0] for k in store.keys()]


def test_unhashable_arguments_give_clear_error():
    @memoize
    def total(items):
        return sum(items)

    with pytest.raises(TypeError, match="must be hashable"):
        total([1, 2])


def test_wraps_keeps_name_and_doc():
    @memoize
    def documented(x):
        """Docstring."""
        return x

    assert documented.__name__ == "documented" and documented.__doc__ == "Docstring."


def test_positional_and_keyword_calls_differ():
    assert make_key((1, 2), {}) != make_key((1,), {"b": 2})


def test_custom_key_function():
    calls = []

    @memoize(key=lambda args, kwargs: args[0].lower())
    def greet(name):
        calls.append(name)
        return f"hi {name}"

    greet("Ann")
    greet("ANN")
    assert calls == ["Ann"]

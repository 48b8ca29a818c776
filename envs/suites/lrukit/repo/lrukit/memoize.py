"""`@memoize`: cache a function's results in an LRUCache (or any lrukit cache)."""
from __future__ import annotations

import functools
from typing import Any, Callable, Hashable, Optional

from lrukit.lru import MISSING, LRUCache
from lrukit.stats import CacheStats

KeyFunc = Callable[[tuple, dict], Hashable]

# Separates positional from keyword arguments so f(1, 2) and f(1, b=2) differ.
_KWARGS_MARK = object()


def make_key(args: tuple, kwargs: dict, typed: bool = False) -> Hashable:
    """A hashable key for a call; keyword order does not matter, types only when `typed`."""
    key: tuple = tuple(args)
    ordered = sorted(kwargs.items())
    if ordered:
        key += (_KWARGS_MARK, *ordered)
    if typed:
        key += tuple(type(a) for a in args) + tuple(type(v) for _, v in ordered)
    return key


def memoize(
    func: Optional[Callable] = None,
    *,
    maxsize: int = 128,
    cache: Optional[LRUCache] = None,
    typed: bool = False,
    key: Optional[KeyFunc] = None,
) -> Callable:
    """Decorator, usable bare (`@memoize`) or configured (`@memoize(maxsize=10)`).

    Results are cached by the call's arguments (which must be hashable); exceptions are not
    cached. The wrapper exposes `.cache`, `.cache_info()` (a CacheStats snapshot) and
    `.cache_clear()`.
    """

    def decorate(fn: Callable) -> Callable:
        store = cache if cache is not None else LRUCache(maxsize)
        make = key if key is not None else functools.partial(_default_key, typed=typed)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            call_key = make(args, kwargs)
            try:
                value = store.get(call_key, MISSING)
            except TypeError:
                raise TypeError(f"memoize: arguments to {fn.__name__}() must be hashable") from None
            if value is not MISSING:
                return value
            value = fn(*args, **kwargs)
            store[call_key] = value
            return value

        def cache_info() -> CacheStats:
            return store.stats.snapshot()

        def cache_clear() -> None:
            store.clear()
            store.stats.reset()

        wrapper.cache = store  # type: ignore[attr-defined]
        wrapper.cache_info = cache_info  # type: ignore[attr-defined]
        wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
        return wrapper

    return decorate(func) if func is not None else decorate


def _default_key(args: tuple, kwargs: dict, *, typed: bool) -> Hashable:
    return make_key(args, kwargs, typed)

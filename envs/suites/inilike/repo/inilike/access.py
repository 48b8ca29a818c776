"""Reading values by dotted path: get(config, 'server.tls.port', default)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .keys import split_key


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def lookup(table: Mapping[str, Any], keys: Sequence[str]) -> Any:
    """The value at `keys`, or MISSING when any step is absent or not a table."""
    value: Any = table
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return MISSING
        value = value[key]
    return value


def get(config: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """config['a']['b']['c'] for path 'a.b.c' (quoted parts allowed), or `default` when absent."""
    value = lookup(config, split_key(path))
    return default if value is MISSING else value

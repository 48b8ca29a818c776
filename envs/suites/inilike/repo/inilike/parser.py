"""Text → nested dicts: comments, [tables], key = value lines and multi-line arrays."""
from __future__ import annotations

from typing import Any, Iterator

from .errors import ConfigError, ParseError
from .keys import split_key
from .scanner import bracket_depth, find_unquoted, strip_comment
from .values import parse_value


def _logical_lines(text: str, source: str) -> Iterator[tuple[int, str]]:
    """(line number, content) with comments removed and multi-line arrays joined."""
    pending = ""
    pending_line = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = strip_comment(raw).strip()
        if pending:
            if line:
                pending += " " + line
            if bracket_depth(pending) <= 0:
                yield pending_line, pending
                pending = ""
            continue
        if not line or line.startswith(";"):
            continue
        if not line.startswith("[") and bracket_depth(line) > 0:
            pending, pending_line = line, number
            continue
        yield number, line
    if pending:
        raise ParseError("array is never closed with ']'", pending_line, source)


def _descend(table: dict[str, Any], keys: list[str], path: list[str]) -> dict[str, Any]:
    """Walk (creating as needed) into nested tables; `path` is only for the message."""
    for key in keys:
        path = path + [key]
        table = table.setdefault(key, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{'.'.join(path)!r} is a value, not a table")
    return table


def parse(text: str, source: str = "<string>") -> dict[str, Any]:
    """Parse without interpolation; `source` names the file in error messages."""
    root: dict[str, Any] = {}
    current: dict[str, Any] = root
    current_path: list[str] = []
    explicit_tables: set[tuple[str, ...]] = set()
    for number, line in _logical_lines(text, source):
        try:
            if line.startswith("["):
                if not line.endswith("]"):
                    raise ConfigError(f"table header must end with ']': {line}")
                current_path = split_key(line[1:-1])
                if tuple(current_path) in explicit_tables:
                    raise ConfigError(f"table [{line[1:-1].strip()}] is defined twice")
                explicit_tables.add(tuple(current_path))
                current = _descend(root, current_path, [])
                continue
            equals = find_unquoted(line, "=")
            if equals == -1:
                raise ConfigError(f"expected 'key = value', got {line!r}")
            keys = split_key(line[:equals])
            value = parse_value(line[equals + 1 :].strip())
            table = _descend(current, keys[:-1], current_path)
            if keys[-1] in table:
                raise ConfigError(f"duplicate key {'.'.join(current_path + keys)!r}")
            table[keys[-1]] = value
        except ParseError:
            raise
        except ConfigError as exc:
            raise ParseError(str(exc), number, source) from None
    return root

"""Nested dicts → text that `loads` reads back to an equal mapping."""
from __future__ import annotations

from typing import Any, Mapping

from .errors import ConfigError
from .keys import BARE_KEY

_ESCAPED = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}


def format_string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPED:
            out.append(_ESCAPED[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def format_key(key: str) -> str:
    return key if BARE_KEY.fullmatch(key) else format_string(key)


def format_value(value: Any, where: str = "value") -> str:
    """One value as config text; `where` names the key in errors."""
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr is the shortest text that reads back as the same float ('3.0', '1e+20', 'inf').
        return repr(value)
    if isinstance(value, str):
        return format_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(item, where) for item in value) + "]"
    raise ConfigError(f"cannot write {where}: unsupported type {type(value).__name__}")


def _write_table(lines: list[str], table: Mapping[str, Any], path: list[str]) -> None:
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    for key, _ in scalars + tables:
        if not isinstance(key, str):
            raise ConfigError(f"keys must be strings, got {key!r} in {'.'.join(path) or 'the root table'}")
    # Header when the table has values of its own, or is empty (so that it survives a reload).
    if path and (scalars or not tables):
        if lines:
            lines.append("")
        lines.append("[" + ".".join(format_key(k) for k in path) + "]")
    for key, value in scalars:
        lines.append(f"{format_key(key)} = {format_value(value, '.'.join(path + [key]))}")
    for key, value in tables:
        _write_table(lines, value, path + [key])


def dumps(config: Mapping[str, Any]) -> str:
    """Values first, then sub-tables, because a key after a [header] would join that table."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"dumps expects a mapping, got {type(config).__name__}")
    lines: list[str] = []
    _write_table(lines, config, [])
    return "\n".join(lines) + "\n" if lines else ""

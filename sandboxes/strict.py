"""Config objects that reject unknown keys.

Every config in agent-rl is a dataclass built through `from_mapping`, so a typo in a YAML
file is an error naming the key and the valid alternatives, never a silently ignored value.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key is invalid; the message names where."""


def _resolve_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str = "config") -> T:
    """Build dataclass `cls` from `data`, recursing into nested dataclass fields.

    Unknown keys raise ConfigError with a close-match suggestion.
    """
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data  # type: ignore[return-value]
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        msgs = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            msgs.append(f"'{key}'{hint}")
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(msgs)}; valid keys: {', '.join(sorted(fields))}"
        )
    hints = _resolve_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        tp = _unwrap_optional(hints.get(key, Any))
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            value = from_mapping(tp, value, f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    """Dataclass → plain dict (for printing the resolved config and saving it)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply a `a.b.c=value` command-line override onto a nested dict."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        nxt = node.setdefault(key, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted}: '{key}' is not a section")
        node = nxt
    node[keys[-1]] = value

"""Turn a pydantic `ValidationError` into one message that names each bad key by its dotted path."""
from __future__ import annotations

import difflib
import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A config value or key is invalid; the message names where."""


_KINDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true/false",
    "string": "a string",
    "dict": "a mapping",
    "model": "a mapping",
    "model_attributes": "a mapping",
    "list": "a list",
    "tuple": "a list",
}
_TYPE_ERROR = re.compile(r"^(?P<kind>[a-z_]+?)_(type|parsing|from_float|attributes_type)$")
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _path(where: str, loc: tuple[Any, ...]) -> str:
    text = where
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{part}" if text else str(part)
    return text


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The config model inside an annotation such as `X`, `X | None`, `dict[str, X]`, `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return None
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:
            model = _inner_model(field.annotation)
        # else: a dict key or list index inside a container field; the element model stays.
    return model


def _unknown_keys(where: str, root: type[BaseModel], parent: tuple[Any, ...], keys: list[str]) -> str:
    model = _model_at(root, parent)
    valid = sorted(model.model_fields) if model is not None else []
    named = []
    for key in keys:
        close = difflib.get_close_matches(str(key), valid, n=1)
        named.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    where_text = _path(where, parent) or "top level"
    return f"{where_text}: unknown key(s) {', '.join(named)}; valid keys: {', '.join(valid)}"


def _one(where: str, error: Any) -> str:
    path = _path(where, tuple(error["loc"]))
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in ("value_error", "assertion_error"):
        message = re.sub(r"^(Value|Assertion) error, ", "", error["msg"])
        return f"{path}: {message}" if path else message
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", ""))) or [str(ctx.get("expected"))]
        return f"{path} {value!r} is not one of {', '.join(choices)}"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        if kind == "greater_than" and bound == 0:
            return f"{path} must be positive (> 0), got {value!r}"
        return f"{path} must be {_BOUNDS[kind]} {bound}, got {value!r}"
    if kind == "missing":
        return f"{path} is required"
    match = _TYPE_ERROR.match(kind)
    if match and match.group("kind") in _KINDS:
        return f"{path} must be {_KINDS[match.group('kind')]}, got {value!r}"
    return f"{path}: {error['msg']} (got {value!r})"


def format_validation_error(exc: ValidationError, root: type[BaseModel], where: str = "") -> str:
    """Every problem in one message, separated by "; ", in pydantic's order; the unknown keys of
    one section are listed together. `where` prefixes every path (e.g. "env")."""
    # Keys: a section's loc (tuple) gathering its unknown keys, or a finished message (str).
    entries: dict[Any, list[str] | None] = {}
    for error in exc.errors():
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden" and loc:
            entries.setdefault(loc[:-1], []).append(str(loc[-1]))
        else:
            entries.setdefault(_one(where, error), None)
    return "; ".join(
        entry if keys is None else _unknown_keys(where, root, entry, keys) for entry, keys in entries.items()
    )

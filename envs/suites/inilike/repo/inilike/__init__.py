"""inilike: an INI/TOML-flavoured config format with typed values, interpolation and a dumper."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from .access import get
from .dump import dumps
from .errors import ConfigError, ParseError
from .interpolate import interpolate as resolve_references
from .parser import parse


def loads(text: str, *, interpolate: bool = True, source: str = "<string>") -> dict[str, Any]:
    config = parse(text, source)
    return resolve_references(config) if interpolate else config


def load(path: Union[str, Path], *, interpolate: bool = True) -> dict[str, Any]:
    file = Path(path)
    return loads(file.read_text(encoding="utf-8"), interpolate=interpolate, source=str(file))


__all__ = ["ConfigError", "ParseError", "dumps", "get", "load", "loads", "resolve_references"]

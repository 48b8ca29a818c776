"""${key} references inside strings.

A reference is looked up in the table that holds the string first and then from the root,
so a section can say ${host} for its own host while ${server.host} reaches across.
'$$' stands for a literal '$'. Values that are not strings are inserted as they would be
written in a config file (true, 8080, 0.5).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from .access import MISSING, lookup
from .dump import format_value
from .errors import ConfigError
from .keys import split_key

_REFERENCE = re.compile(r"\$\$|\$\{([^}]*)\}")

Path = tuple[str, ...]


def _dotted(path: Path) -> str:
    return ".".join(path)


class _Resolver:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        # The strings being resolved right now, innermost last: a repeat means a cycle.
        self.active: list[Path] = []

    def table(self, table: Mapping[str, Any], path: Path) -> dict[str, Any]:
        return {key: self.value(value, path + (key,)) for key, value in table.items()}

    def value(self, value: Any, path: Path) -> Any:
        if isinstance(value, Mapping):
            return self.table(value, path)
        if isinstance(value, list):
            return [self.value(item, path) for item in value]
        if isinstance(value, str):
            return self.string(value, path)
        return value

    def string(self, text: str, path: Path) -> str:
        if path in self.active:
            chain = " -> ".join(_dotted(p) for p in self.active[self.active.index(path):] + [path])
            raise ConfigError(f"interpolation cycle: {chain}")
        self.active.append(path)
        try:
            return _REFERENCE.sub(lambda match: self.replacement(match, path), text)
        finally:
            self.active.pop()

    def replacement(self, match: re.Match[str], path: Path) -> str:
        if match.group(0) == "$$":
            return "$"
        reference = match.group(1)
        try:
            keys = tuple(split_key(reference))
        except ConfigError as exc:
            raise ConfigError(f"{_dotted(path)}: bad reference ${{{reference}}}: {exc}") from None
        for candidate in (path[:-1] + keys, keys):
            found = lookup(self.root, candidate)
            if found is not MISSING:
                break
        else:
            raise ConfigError(f"{_dotted(path)}: unknown reference ${{{reference}}}")
        if isinstance(found, (Mapping, list)):
            raise ConfigError(f"{_dotted(path)}: ${{{reference}}} is a {type(found).__name__}, not a single value")
        resolved = self.value(found, candidate)
        return resolved if isinstance(resolved, str) else format_value(resolved)


def interpolate(config: Mapping[str, Any]) -> dict[str, Any]:
    """A new mapping with every ${...} in every string resolved; the input is not changed."""
    return _Resolver(config).table(config, ())

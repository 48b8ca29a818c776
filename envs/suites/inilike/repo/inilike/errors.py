"""Exceptions: every message says where the problem is."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config that cannot be read, resolved or written."""


class ParseError(ConfigError):
    """Malformed text; carries the source name and the 1-based line number."""

    def __init__(self, message: str, line: int, source: str = "<string>") -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.message = message
        self.line = line
        self.source = source

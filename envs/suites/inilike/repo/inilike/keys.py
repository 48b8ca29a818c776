"""Keys: bare (server, max_conn, x-y) or quoted ("cert.path"), joined by dots into paths."""
from __future__ import annotations

import re

from .scanner import split_unquoted
from .values import InvalidValue, parse_basic_string, parse_literal_string

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def split_key(text: str) -> list[str]:
    """'server."cert.path"' → ['server', 'cert.path']; dots inside quotes do not split."""
    keys = []
    for part in split_unquoted(text, "."):
        part = part.strip()
        if part.startswith('"'):
            keys.append(parse_basic_string(part))
        elif part.startswith("'"):
            keys.append(parse_literal_string(part))
        elif BARE_KEY.fullmatch(part):
            keys.append(part)
        else:
            raise InvalidValue(f"invalid key {text.strip()!r} (quote keys that have spaces or other characters)")
    return keys

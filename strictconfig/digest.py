"""A short stable digest of a settings tree: the key under which a stored result (eval rows, a
pipeline stage) is reused only when the settings that produced it are the same."""
from __future__ import annotations

import hashlib
import json
from typing import Any


def settings_digest(settings: Any) -> str:
    """16 hex digits of the settings as canonical JSON (key order does not matter; values JSON
    cannot hold are written as their str)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]

"""Text spaces over the whole Basic Multilingual Plane, for SWEEnv's observations and actions."""
from __future__ import annotations

import copy
import functools

from gymnasium import spaces

MAX_TEXT_LENGTH = 1 << 20  # characters; observations are capped far below this

_SURROGATES = range(0xD800, 0xE000)


@functools.lru_cache(maxsize=1)
def _bmp_text_space() -> spaces.Text:
    charset = "".join(chr(c) for c in range(0x10000) if c not in _SURROGATES)
    return spaces.Text(max_length=MAX_TEXT_LENGTH, min_length=0, charset=charset)


def text_space() -> spaces.Text:
    """A Text space of up to MAX_TEXT_LENGTH BMP characters (its own RNG, a shared charset)."""
    # Building the 63k-character index costs ~50 ms and megabytes; copies share it but
    # each gets its own RNG.
    return copy.copy(_bmp_text_space())


def to_space_text(text: str) -> str:
    """Characters outside the BMP (emoji in output, say) become U+FFFD so observations
    always belong to the observation space."""
    if text.isascii():
        return text[:MAX_TEXT_LENGTH]
    return "".join(c if ord(c) < 0x10000 and not 0xD800 <= ord(c) < 0xE000 else "\ufffd" for c in text)[
        :MAX_TEXT_LENGTH
    ]

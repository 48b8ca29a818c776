"""Finding characters outside of quoted strings.

Comments, '=' signs, commas and dots only mean something when they are not inside a string,
so every split in the parser goes through `unquoted_positions`.
"""
from __future__ import annotations

from typing import Iterator


def unquoted_positions(text: str) -> Iterator[int]:
    """Indexes of the characters of `text` that lie outside "basic" and 'literal' strings.

    The quote characters themselves are not yielded. An unterminated string simply hides the
    rest of the text; the value parser reports it properly.
    """
    quote = None
    index = 0
    while index < len(text):
        char = text[index]
        if quote is None:
            if char in ("'", '"'):
                quote = char
            else:
                yield index
        elif char == "\\" and quote == '"':
            # Skip the escaped character: in "a \" b" the middle quote does not close the string.
            index += 1
        elif char == quote:
            quote = None
        index += 1


def strip_comment(text: str) -> str:
    """Drop a '#' comment unless the '#' is inside a string."""
    for index in unquoted_positions(text):
        if text[index] == "#":
            return text[:index]
    return text


def find_unquoted(text: str, char: str) -> int:
    """Index of the first `char` outside strings, or -1."""
    for index in unquoted_positions(text):
        if text[index] == char:
            return index
    return -1


def bracket_depth(text: str) -> int:
    """How many '[' are still open at the end of `text` (strings ignored)."""
    depth = 0
    for index in unquoted_positions(text):
        if text[index] == "[":
            depth += 1
        elif text[index] == "]":
            depth -= 1
    return depth


def split_unquoted(text: str, separator: str) -> list[str]:
    """Split at `separator` where it is outside strings and outside nested brackets."""
    parts: list[str] = []
    depth = 0
    start = 0
    for index in unquoted_positions(text):
        char = text[index]
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts

"""One value's text → a Python value: strings, ints, floats, bools and arrays.

The value parser knows nothing about lines or files; it raises InvalidValue and the parser
adds the location.
"""
from __future__ import annotations

import re
from string import hexdigits
from typing import Any

from .errors import ConfigError
from .scanner import split_unquoted


class InvalidValue(ConfigError):
    """A value's text is malformed; the parser turns this into a ParseError with a line."""


_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_UNICODE_WIDTHS = {"u": 4, "U": 8}

# No leading zeros ("007" is more likely a typo than an octal number); '_' separates digits.
_INT_RE = re.compile(r"[+-]?(?:0x[0-9A-Fa-f][0-9A-Fa-f_]*|0o[0-7][0-7_]*|0b[01][01_]*|0|[1-9][\d_]*)")
# A float needs a fraction, an exponent or both; plain digits are ints (tried first).
_FLOAT_RE = re.compile(
    r"[+-]?(?:0|[1-9][\d_]*)(?:\.\d[\d_]*(?:[eE][+-]?\d[\d_]*)?|[eE][+-]?\d[\d_]*)"
    r"|[+-]?(?:inf|nan)"
)


def _unescape(text: str, index: int) -> tuple[str, int]:
    """Decode the escape whose code letter is at `index`; return it and the index after it."""
    if index >= len(text):
        raise InvalidValue("unterminated string")
    code = text[index]
    if code in _ESCAPES:
        return _ESCAPES[code], index + 1
    if code in _UNICODE_WIDTHS:
        width = _UNICODE_WIDTHS[code]
        digits = text[index + 1 : index + 1 + width]
        if len(digits) != width or not all(d in hexdigits for d in digits):
            raise InvalidValue(f"\\{code} needs {width} hex digits, got {digits!r}")
        try:
            return chr(int(digits, 16)), index + 1 + width
        except (ValueError, OverflowError):
            raise InvalidValue(f"\\{code}{digits} is not a Unicode code point") from None
    raise InvalidValue(f"unknown escape \\{code}")


def _closing_check(text: str, end: int) -> None:
    if end != len(text) - 1:
        raise InvalidValue(f"unexpected text after the string: {text[end + 1:]!r}")


def parse_basic_string(text: str) -> str:
    """'"..."' with backslash escapes → its content."""
    chars: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == '"':
            _closing_check(text, index)
            return "".join(chars)
        if char == "\\":
            decoded, index = _unescape(text, index + 1)
            chars.append(decoded)
            continue
        chars.append(char)
        index += 1
    raise InvalidValue(f"unterminated string: {text}")


def parse_literal_string(text: str) -> str:
    """"'...'" taken verbatim: no escapes, so Windows paths and regexes read naturally."""
    end = text.find("'", 1)
    if end == -1:
        raise InvalidValue(f"unterminated string: {text}")
    _closing_check(text, end)
    return text[1:end]


def parse_array(text: str) -> list[Any]:
    if not text.endswith("]"):
        raise InvalidValue(f"unterminated array: {text}")
    inner = text[1:-1]
    if not inner.strip():
        return []
    items = split_unquoted(inner, ",")
    if not items[-1].strip():
        # A trailing comma (usual in arrays written one item per line) adds no item.
        items.pop()
    return [parse_value(item.strip()) for item in items]


def parse_value(text: str) -> Any:
    """A complete value's text (comment already removed, whitespace stripped)."""
    if not text:
        raise InvalidValue("missing value")
    first = text[0]
    if first == '"':
        return parse_basic_string(text)
    if first == "'":
        return parse_literal_string(text)
    if first == "[":
        return parse_array(text)
    if text in ("true", "false"):
        return text == "true"
    if _INT_RE.fullmatch(text):
        return int(text.replace("_", ""), 0)
    if _FLOAT_RE.fullmatch(text):
        return float(text.replace("_", ""))
    raise InvalidValue(f"invalid value {text!r} (strings need quotes)")

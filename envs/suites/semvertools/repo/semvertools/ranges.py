"""Version ranges in the npm style: ``^1.2``, ``~1.2.3``, ``>=1.0.0 <2``, ``1.x``, ``1.0 - 2.0``, ``a || b``.

A range is an OR of comparator sets; a comparator set is an AND of simple comparators
(``<``, ``<=``, ``>``, ``>=``, ``=``) against full versions. Every shorthand is desugared into
simple comparators when the range is parsed, so matching is just a loop.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from semvertools.version import InvalidVersion, Version, coerce, split_prerelease

_PARTIAL = re.compile(
    r"v?(?P<major>\d+|[xX*])(?:\.(?P<minor>\d+|[xX*])(?:\.(?P<patch>\d+|[xX*])"
    r"(?:-(?P<prerelease>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?)?)?"
)
_OPERATORS = ("<=", ">=", "<", ">", "=", "^", "~")


class InvalidRange(ValueError):
    """The text is not a version range; the message quotes it."""


@dataclass(frozen=True)
class Partial:
    """A version with trailing parts missing or wildcarded: ``1``, ``1.2``, ``1.x``, ``*``."""

    major: Optional[int]
    minor: Optional[int]
    patch: Optional[int]
    prerelease: tuple = ()

    @property
    def is_full(self) -> bool:
        return self.patch is not None

    def floor(self) -> Version:
        """The lowest version the partial covers: 1.2 -> 1.2.0."""
        return Version(self.major or 0, self.minor or 0, self.patch or 0, self.prerelease)


def parse_partial(text: str, source: str) -> Partial:
    match = _PARTIAL.fullmatch(text)
    if match is None:
        raise InvalidRange(f"{source!r}: {text!r} is not a version or partial version")
    parts: list[Optional[int]] = []
    for name in ("major", "minor", "patch"):
        value = match.group(name)
        # Once one part is a wildcard, everything after it is too: 1.x.3 means 1.x.
        if value is None or value in "xX*" or (parts and parts[-1] is None):
            parts.append(None)
        else:
            parts.append(int(value))
    prerelease = match.group("prerelease")
    try:
        identifiers = split_prerelease(prerelease, source) if prerelease and parts[2] is not None else ()
    except InvalidVersion as exc:
        raise InvalidRange(str(exc)) from None
    return Partial(parts[0], parts[1], parts[2], identifiers)


@dataclass(frozen=True)
class Comparator:
    operator: str
    version: Version

    def matches(self, version: Version) -> bool:
        if self.operator == "<":
            return version < self.version
        if self.operator == "<=":
            return version <= self.version
        if self.operator == ">":
            return version > self.version
        if self.operator == ">=":
            return version >= self.version
        return version == self.version

    def __str__(self) -> str:
        return f"{'' if self.operator == '=' else self.operator}{self.version}"


def _x_range(p: Partial) -> list[Comparator]:
    """``1.2.3`` -> =1.2.3; ``1.2`` -> >=1.2.0 <1.3.0; ``1`` -> >=1.0.0 <2.0.0; ``*`` -> any."""
    if p.major is None:
        return [Comparator(">=", Version(0, 0, 0))]
    if p.minor is None:
        return [Comparator(">=", p.floor()), Comparator("<", Version(p.major + 1, 0, 0))]
    if p.patch is None:
        return [Comparator(">=", p.floor()), Comparator("<", Version(p.major, p.minor + 1, 0))]
    return [Comparator("=", p.floor())]


def _caret(p: Partial) -> list[Comparator]:
    """Allow changes that do not modify the left-most non-zero part."""
    if p.major is None:
        return _x_range(p)
    if p.major > 0 or p.minor is None:
        upper = Version(p.major + 1, 0, 0)
    elif p.minor > 0 or p.patch is None:
        upper = Version(0, p.minor + 1, 0)
    else:
        upper = Version(0, 0, p.patch + 1)
    return [Comparator(">=", p.floor()), Comparator("<", upper)]


def _tilde(p: Partial) -> list[Comparator]:
    """Allow patch-level changes if a minor is given, minor-level changes if not."""
    if p.major is None:
        return _x_range(p)
    if p.minor is None:
        return [Comparator(">=", p.floor()), Comparator("<", Version(p.major + 1, 0, 0))]
    return [Comparator(">=", p.floor()), Comparator("<", Version(p.major, p.minor + 1, 0))]


def _primitive(operator: str, p: Partial) -> list[Comparator]:
    """A plain comparison against a partial: ``>1.2`` means >=1.3.0, ``<=1.2`` means <1.3.0."""
    if p.is_full:
        return [Comparator(operator, p.floor())]
    if p.major is None:
        # ">*" or "<*" can never match; ">=*" and "<=*" match everything.
        return [Comparator(">=", Version(0, 0, 0))] if operator in (">=", "<=") else [Comparator("<", Version(0, 0, 0))]
    next_up = Version(p.major + 1, 0, 0) if p.minor is None else Version(p.major, p.minor + 1, 0)
    if operator == ">":
        return [Comparator(">=", next_up)]
    if operator == "<=":
        return [Comparator("<", next_up)]
    return [Comparator(operator, p.floor())]


def _hyphen(low: Partial, high: Partial) -> list[Comparator]:
    """``1.2.3 - 2.3`` -> >=1.2.3 <2.4.0: a partial upper end includes the whole partial."""
    comparators = [Comparator(">=", low.floor())]
    if high.major is None:
        return comparators
    if high.is_full:
        comparators.append(Comparator("<=", high.floor()))
    elif high.minor is None:
        comparators.append(Comparator("<", Version(high.major + 1, 0, 0)))
    else:
        comparators.append(Comparator("<", Version(high.major, high.minor + 1, 0)))
    return comparators


def _parse_token(token: str, source: str) -> list[Comparator]:
    for operator in _OPERATORS:
        if token.startswith(operator):
            partial = parse_partial(token[len(operator):], source)
            if operator == "^":
                return _caret(partial)
            if operator == "~":
                return _tilde(partial)
            return _primitive(operator, partial)
    return _x_range(parse_partial(token, source))


def _parse_set(text: str, source: str) -> tuple[Comparator, ...]:
    # Operators may be separated from their version by spaces (">= 1.2"); glue them back.
    tokens = re.sub(r"(<=|>=|<|>|=|\^|~)\s+", r"\1", text.strip()).split()
    if not tokens:
        return (Comparator(">=", Version(0, 0, 0)),)
    if len(tokens) == 3 and tokens[1] == "-":
        return tuple(_hyphen(parse_partial(tokens[0], source), parse_partial(tokens[2], source)))
    if "-" in tokens:
        raise InvalidRange(f"{source!r}: a hyphen range needs exactly one version on each side")
    comparators: list[Comparator] = []
    for token in tokens:
        comparators.extend(_parse_token(token, source))
    return tuple(comparators)


class Range:
    """A parsed range; ``version in range`` tests membership (prereleases excluded by default)."""

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise InvalidRange(f"expected a string, got {type(text).__name__}")
        self.text = text
        self.sets = tuple(_parse_set(part, text) for part in text.split("||"))

    def __repr__(self) -> str:
        return f"Range({self.text!r})"

    def __str__(self) -> str:
        return " || ".join(" ".join(str(c) for c in s) for s in self.sets)

    def test(self, version: "Version | str", *, include_prerelease: bool = False) -> bool:
        v = coerce(version)
        for comparators in self.sets:
            if not all(c.matches(v) for c in comparators):
                continue
            if not v.is_prerelease or include_prerelease:
                return True
            # A prerelease only matches when the range itself names a prerelease of the
            # same release, so ^1.2.3 never silently picks up 1.3.0-alpha.
            if any(c.version.is_prerelease and c.version.same_release(v) for c in comparators):
                return True
        return False

    def __contains__(self, version: "Version | str") -> bool:
        return self.test(version)


def satisfies(version: "Version | str", range_text: "Range | str", *, include_prerelease: bool = False) -> bool:
    rng = range_text if isinstance(range_text, Range) else Range(range_text)
    return rng.test(version, include_prerelease=include_prerelease)


def parse_range(text: str) -> Range:
    return Range(text)


def valid_range(text: str) -> bool:
    try:
        Range(text)
    except (InvalidRange, InvalidVersion):
        return False
    return True

"""Semantic versions as defined by semver.org 2.0.0: parsing, formatting, precedence, bumping."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering
from typing import Union

Identifier = Union[int, str]

_VERSION = re.compile(
    r"v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<prerelease>[0-9A-Za-z.-]+))?"
    r"(?:\+(?P<build>[0-9A-Za-z.-]+))?"
)
_IDENTIFIER = re.compile(r"[0-9A-Za-z-]+")


class InvalidVersion(ValueError):
    """The text is not a semantic version; the message quotes it."""


def split_prerelease(text: str, source: str) -> tuple[Identifier, ...]:
    """Dot-separated prerelease identifiers; numeric ones become ints so they sort numerically."""
    identifiers: list[Identifier] = []
    for part in text.split("."):
        if not _IDENTIFIER.fullmatch(part):
            raise InvalidVersion(f"{source!r}: invalid prerelease identifier {part!r}")
        if part.isdigit():
            if len(part) > 1 and part.startswith("0"):
                raise InvalidVersion(f"{source!r}: numeric identifier {part!r} has a leading zero")
            identifiers.append(int(part))
        else:
            identifiers.append(part)
    return tuple(identifiers)


def split_build(text: str, source: str) -> tuple[str, ...]:
    parts = tuple(text.split("."))
    for part in parts:
        if not _IDENTIFIER.fullmatch(part):
            raise InvalidVersion(f"{source!r}: invalid build identifier {part!r}")
    return parts


def _identifier_key(identifier: Identifier) -> tuple[int, int, str]:
    # Numeric identifiers always have lower precedence than alphanumeric ones.
    if isinstance(identifier, int):
        return (0, identifier, "")
    return (1, 0, identifier)


@total_ordering
@dataclass(frozen=True, eq=False)
class Version:
    """An immutable semantic version.

    Equality and ordering follow semver precedence, so build metadata is ignored:
    ``Version.parse("1.0.0+a") == Version.parse("1.0.0+b")``.
    """

    major: int
    minor: int = 0
    patch: int = 0
    prerelease: tuple[Identifier, ...] = ()
    build: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("major", "minor", "patch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidVersion(f"{name} must be a non-negative integer, got {value!r}")

    @classmethod
    def parse(cls, text: str) -> "Version":
        if not isinstance(text, str):
            raise InvalidVersion(f"expected a string, got {type(text).__name__}")
        match = _VERSION.fullmatch(text.strip())
        if match is None:
            raise InvalidVersion(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH)")
        prerelease = match.group("prerelease")
        build = match.group("build")
        return cls(
            int(match.group("major")),
            int(match.group("minor")),
            int(match.group("patch")),
            split_prerelease(prerelease, text) if prerelease else (),
            split_build(build, text) if build else (),
        )

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(i) for i in self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    def __repr__(self) -> str:
        return f"Version('{self}')"

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    @property
    def release(self) -> tuple[int, int, int]:
        """The (major, minor, patch) triple, without prerelease or build."""
        return (self.major, self.minor, self.patch)

    def same_release(self, other: "Version") -> bool:
        """True when both share major, minor and patch (prerelease and build aside)."""
        return self.release == other.release

    def precedence_key(self) -> tuple:
        # A release sorts after every prerelease of the same triple: 1.0.0-rc.1 < 1.0.0.
        if not self.prerelease:
            return (self.release, (1,))
        return (self.release, (0, tuple(_identifier_key(i) for i in self.prerelease)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.precedence_key() == other.precedence_key()

    def __lt__(self, other: "Version") -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.precedence_key() < other.precedence_key()

    def __hash__(self) -> int:
        return hash(self.precedence_key())

    # --- bumping ------------------------------------------------------------------------

    def bump_major(self) -> "Version":
        return Version(self.major + 1, 0, 0)

    def bump_minor(self) -> "Version":
        return Version(self.major, self.minor + 1, 0)

    def bump_patch(self) -> "Version":
        # A prerelease of X.Y.Z bumps to its own release, X.Y.Z (as npm and semver do).
        if self.prerelease:
            return Version(self.major, self.minor, self.patch)
        return Version(self.major, self.minor, self.patch + 1)

    def bump_prerelease(self, token: str = "rc") -> "Version":
        """1.2.3 -> 1.2.4-rc.1; 1.2.4-rc.1 -> 1.2.4-rc.2; 1.2.4-beta -> 1.2.4-beta.1."""
        if not self.prerelease:
            return Version(self.major, self.minor, self.patch + 1, (token, 1))
        *head, last = self.prerelease
        if isinstance(last, int):
            return Version(self.major, self.minor, self.patch, (*head, last + 1))
        return Version(self.major, self.minor, self.patch, (*self.prerelease, 1))


def parse(text: str) -> Version:
    return Version.parse(text)


def coerce(value: "Version | str") -> Version:
    """Accept either a Version or its text, so every public function takes both."""
    return value if isinstance(value, Version) else Version.parse(value)


def compare(a: "Version | str", b: "Version | str") -> int:
    """-1, 0 or 1 as `a` has lower, equal or higher precedence than `b`."""
    key_a, key_b = coerce(a).precedence_key(), coerce(b).precedence_key()
    return (key_a > key_b) - (key_a < key_b)

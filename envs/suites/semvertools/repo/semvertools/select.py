"""Operations over collections of versions: sorting, picking the best match for a range."""
from __future__ import annotations

from typing import Iterable, Optional

from semvertools.ranges import Range
from semvertools.version import Version, coerce


def _matching(versions: Iterable["Version | str"], rng: Range, include_prerelease: bool) -> list[Version]:
    return [v for v in map(coerce, versions) if rng.test(v, include_prerelease=include_prerelease)]


def sort_versions(versions: Iterable["Version | str"], *, reverse: bool = False) -> list[Version]:
    """Versions in precedence order; equal-precedence versions keep their input order."""
    return sorted((coerce(v) for v in versions), reverse=reverse)


def max_satisfying(
    versions: Iterable["Version | str"], range_text: "Range | str", *, include_prerelease: bool = False
) -> Optional[Version]:
    """The highest version in `versions` that the range accepts, or None."""
    rng = range_text if isinstance(range_text, Range) else Range(range_text)
    candidates = _matching(versions, rng, include_prerelease)
    return max(candidates) if candidates else None


def min_satisfying(
    versions: Iterable["Version | str"], range_text: "Range | str", *, include_prerelease: bool = False
) -> Optional[Version]:
    """The lowest version in `versions` that the range accepts, or None."""
    rng = range_text if isinstance(range_text, Range) else Range(range_text)
    candidates = _matching(versions, rng, include_prerelease)
    return min(candidates) if candidates else None


def latest(versions: Iterable["Version | str"], *, include_prerelease: bool = False) -> Optional[Version]:
    """The highest version, skipping prereleases unless asked for them."""
    pool = [v for v in map(coerce, versions) if include_prerelease or not v.is_prerelease]
    return max(pool) if pool else None

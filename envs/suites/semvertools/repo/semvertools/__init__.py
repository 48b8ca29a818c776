"""semvertools: semantic versions, precedence and npm-style ranges, in pure Python."""
from semvertools.ranges import InvalidRange, Range, parse_range, satisfies, valid_range
from semvertools.select import latest, max_satisfying, min_satisfying, sort_versions
from semvertools.version import InvalidVersion, Version, compare, parse

__all__ = [
    "InvalidRange",
    "InvalidVersion",
    "Range",
    "Version",
    "compare",
    "latest",
    "max_satisfying",
    "min_satisfying",
    "parse",
    "parse_range",
    "satisfies",
    "sort_versions",
    "valid_range",
]
__version__ = "1.0.0"

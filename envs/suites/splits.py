"""The fixed train / held-out splits of the built-in libraries.

The split is by library, never by task: two tasks of one library share code, tests and
idioms, so a held-out task from a trained-on library measures recall more than skill. Four
libraries train, two are held out; both halves hold every difficulty (and the floor tier,
which has one variant per task). envs/suites/README.md lists the counts; a test checks that
every library is in exactly one split and that the two halves share no repository content.
"""
from __future__ import annotations

from envs.suites.spec import SuiteError

SPLITS: dict[str, tuple[str, ...]] = {
    # Dates, text diffs, caching and version ranges: four different kinds of code to learn on.
    "train": ("datekit", "linediff", "lrukit", "semvertools"),
    # A config-file parser and an interval set: parsing and ordering code never trained on.
    "heldout": ("inilike", "spanset"),
}


def split_suites(name: str) -> tuple[str, ...]:
    """The libraries of one split; an unknown name is a SuiteError listing the splits."""
    try:
        return SPLITS[name]
    except KeyError:
        raise SuiteError(f"unknown split {name!r}; available: {', '.join(SPLITS)}") from None


def split_of(suite: str) -> str:
    """The split holding `suite`; a library in none is a SuiteError (every one must be placed)."""
    for name, members in SPLITS.items():
        if suite in members:
            return name
    raise SuiteError(f"built-in suite {suite!r} is in no split; add it to envs/suites/splits.py")

"""The built-in task suites: small real libraries with injected bugs, issues and hidden tests.

Each directory here holding `repo/` and `tasks.yaml` is one library (see spec.py for the
format). Loading a suite materializes, per task, a one-commit git repo of the buggy state
under the cache (`$AGENT_RL_CACHE/suites`, default `~/.cache/agent-rl/suites`) and returns
`envs.tasks.Task` objects whose FAIL_TO_PASS / PASS_TO_PASS come from the `lists.json` that
`python -m envs.suites.refresh` writes.

    load_suite("semvertools", difficulty="easy")
    load_builtin("builtin:lrukit:hard")
    load_builtin("builtin:floor:train")   # floor variants of the train split's libraries
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from envs.suites.floor import FLOOR, floor_variant
from envs.suites.materialize import default_cache_dir, materialize
from envs.suites.splits import SPLITS, split_of, split_suites
from envs.suites.spec import (
    DIFFICULTIES,
    SuiteError,
    SuiteSpec,
    TaskSpec,
    TaskTestLists,
    apply_bug,
    fingerprint,
    parse_suite,
    read_lists,
    read_tree,
)
from envs.tasks import Task

__all__ = [
    "SuiteError", "list_suites", "load_suite", "load_builtin", "parse_builtin_spec", "suite_spec", "SUITES_DIR",
    "SPLITS", "TIERS", "split_of", "floor_variant",
]

SUITES_DIR = Path(__file__).resolve().parent
TEST_CMD = "python3 -m pytest"
VERSION = "1.0"
# The difficulties a spec may name: the three of tasks.yaml plus the generated floor tier.
TIERS = (*DIFFICULTIES, FLOOR)


def list_suites() -> list[str]:
    """Names of the built-in libraries, sorted."""
    return sorted(
        p.name for p in SUITES_DIR.iterdir() if p.is_dir() and (p / "tasks.yaml").is_file() and (p / "repo").is_dir()
    )


def suite_spec(name: str) -> SuiteSpec:
    """The parsed, shape-checked tasks.yaml of one library."""
    names = list_suites()
    if name not in names:
        raise SuiteError(f"unknown built-in suite {name!r}; available: {', '.join(names) or '(none)'}")
    return parse_suite(SUITES_DIR / name)


def build_task(
    suite: SuiteSpec,
    spec: TaskSpec,
    clean: dict[str, str],
    cache_dir: Path,
    *,
    lists_required: bool = True,
    lists: Mapping[str, TaskTestLists] | None = None,
) -> Task:
    """Materialize one task and wrap it as a Task (lists left empty when not required)."""
    buggy = apply_bug(clean, spec, suite.tasks_file)
    key = fingerprint(clean, spec)
    built = materialize(spec, clean, buggy, key, cache_dir)
    fail_to_pass: list[str] = []
    pass_to_pass: list[str] = []
    entry = (lists or {}).get(spec.id)
    if entry is not None and entry.fingerprint == key:
        fail_to_pass, pass_to_pass = list(entry.FAIL_TO_PASS), list(entry.PASS_TO_PASS)
    elif lists_required:
        state = "missing from" if entry is None else "stale in"
        raise SuiteError(
            f"{suite.lists_file}: task {spec.id!r}: FAIL_TO_PASS/PASS_TO_PASS are {state} lists.json; "
            f"run `python -m envs.suites.refresh --suite {suite.name}`"
        )
    return Task(
        instance_id=spec.id,
        repo=str(built.repo),
        base_commit=built.base_commit,
        environment_setup_commit=built.base_commit,
        problem_statement=spec.problem_statement,
        patch=built.patch,
        test_patch=built.test_patch,
        FAIL_TO_PASS=fail_to_pass,
        PASS_TO_PASS=pass_to_pass,
        version=VERSION,
        test_cmd=TEST_CMD,
        test_files=[h.file for h in spec.hidden_tests],
        suite=suite.name,
        difficulty=spec.difficulty,
    )


def load_suite(
    name: str | None = None,
    *,
    difficulty: str | None = None,
    cache_dir: str | None = None,
    split: str | None = None,
) -> list[Task]:
    """Tasks of one library (or of a split's, or of all when both are None), optionally of one tier.

    `difficulty="floor"` gives the floor variant of every task (see envs/suites/floor.py).
    `cache_dir` replaces `$AGENT_RL_CACHE/suites` as the place materialized repos go.
    """
    if difficulty is not None and difficulty not in TIERS:
        raise SuiteError(f"unknown difficulty {difficulty!r}; expected one of {', '.join(TIERS)}")
    if name is not None and split is not None:
        raise SuiteError(f"give a suite or a split, not both (suite {name!r}, split {split!r})")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    names = [name] if name is not None else list(split_suites(split)) if split is not None else list_suites()
    tasks: list[Task] = []
    for suite_name in names:
        suite = suite_spec(suite_name)
        clean = read_tree(suite.repo_dir)
        lists = read_lists(suite)
        for spec in suite.tasks:
            if difficulty == FLOOR:
                buggy = apply_bug(clean, spec, suite.tasks_file)
                tasks.append(floor_variant(build_task(suite, spec, clean, cache, lists=lists), buggy.__getitem__))
            elif difficulty is None or spec.difficulty == difficulty:
                tasks.append(build_task(suite, spec, clean, cache, lists=lists))
    return tasks


def parse_builtin_spec(spec: str) -> tuple[str | None, str | None, str | None]:
    """(suite, split, difficulty) of "builtin[:PART[:PART]]"; parts in any order, each kind once.

    A part is a library name, a split (train, heldout) or a tier (easy, medium, hard, floor).
    """
    head, *parts = spec.split(":")
    if head != "builtin":
        raise SuiteError(f"task spec {spec!r}: must start with 'builtin'")
    if len(parts) > 2 or any(not p for p in parts):
        raise SuiteError(f"bad builtin spec {spec!r}: a task spec is builtin[:SUITE|SPLIT][:DIFFICULTY]")
    suites = list_suites()
    name = split = difficulty = None
    for part in parts:
        if part in TIERS:
            if difficulty is not None:
                raise SuiteError(f"task spec {spec!r}: two difficulties ({difficulty!r}, {part!r}); give one")
            difficulty = part
        elif part in suites or part in SPLITS:
            if name is not None or split is not None:
                raise SuiteError(f"task spec {spec!r}: give one suite or one split, not {name or split!r} and {part!r}")
            name, split = (part, None) if part in suites else (None, part)
        else:
            raise SuiteError(
                f"task spec {spec!r}: unknown builtin suite {part!r}, nor a split or a difficulty "
                f"(suites: {', '.join(suites)}; splits: {', '.join(SPLITS)}; "
                f"difficulty must be one of {', '.join(TIERS)})"
            )
    return name, split, difficulty


def load_builtin(spec: str, *, cache_dir: str | None = None) -> list[Task]:
    """Tasks named by a spec string: "builtin", "builtin:easy", "builtin:semvertools:hard",
    "builtin:train", "builtin:heldout:medium", "builtin:floor", "builtin:floor:train"
    (the parts after "builtin" in any order; see `parse_builtin_spec`)."""
    name, split, difficulty = parse_builtin_spec(spec)
    return load_suite(name, difficulty=difficulty, cache_dir=cache_dir, split=split)

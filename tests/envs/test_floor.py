"""The floor tier, the train / held-out splits and the builtin spec grammar.

No Docker except the one test marked `docker`: floor statements are checked against the
materialized buggy repos (git, files), and the floor fixes are replayed with the env's own
search/replace so they provably turn the buggy file into the gold state.
"""
from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from envs.actions import apply_str_replace
from envs.suites import SPLITS, SuiteError, list_suites, load_suite, parse_builtin_spec, suite_spec
from envs.suites.floor import Fix, floor_variant, locate_fixes, parse_blocks
from envs.suites.spec import read_tree
from envs.tasks import Task, TaskError, load_tasks


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("floor-cache"))


@pytest.fixture(scope="module")
def originals(cache: str) -> dict[str, Task]:
    return {t.instance_id: t for t in load_suite(cache_dir=cache)}


@pytest.fixture(scope="module")
def floor(cache: str) -> list[Task]:
    return load_suite(difficulty="floor", cache_dir=cache)


# --- spec grammar ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("builtin", (None, None, None)),
        ("builtin:floor", (None, None, "floor")),
        ("builtin:train", (None, "train", None)),
        ("builtin:heldout:easy", (None, "heldout", "easy")),
        ("builtin:floor:train", (None, "train", "floor")),
        ("builtin:train:floor", (None, "train", "floor")),
        ("builtin:lrukit:floor", ("lrukit", None, "floor")),
        ("builtin:hard:semvertools", ("semvertools", None, "hard")),
    ],
)
def test_spec_parts_in_any_order(spec: str, expected: tuple) -> None:
    assert parse_builtin_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("builtin:trian", r"unknown builtin suite 'trian', nor a split.*splits: train, heldout"),
        ("builtin:floor:easy", r"two difficulties \('floor', 'easy'\)"),
        ("builtin:train:heldout", r"one suite or one split, not 'train' and 'heldout'"),
        ("builtin:lrukit:train", r"one suite or one split"),
        ("builtin:floor:train:easy", r"bad builtin spec"),
        ("builtin::floor", r"bad builtin spec"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(SuiteError, match=message):
        parse_builtin_spec(spec)
    with pytest.raises(TaskError, match=message):  # the same error through the one entry point
        load_tasks(spec)


def test_floor_prefix_needs_a_spec() -> None:
    with pytest.raises(TaskError, match="name the tasks after the colon"):
        load_tasks("floor:")


def test_split_specs_load_their_libraries(cache: str, originals: dict[str, Task]) -> None:
    from envs.suites import load_builtin

    train = load_builtin("builtin:train:medium", cache_dir=cache)
    assert {t.suite for t in train} == set(SPLITS["train"]) and {t.difficulty for t in train} == {"medium"}
    held = load_builtin("builtin:floor:heldout", cache_dir=cache)
    assert {t.suite for t in held} == set(SPLITS["heldout"])
    assert len(held) == sum(t.suite in SPLITS["heldout"] for t in originals.values())


# --- splits ------------------------------------------------------------------------------


def test_every_library_is_in_exactly_one_split() -> None:
    placed = Counter(name for members in SPLITS.values() for name in members)
    assert sorted(placed) == list_suites() and set(placed.values()) == {1}
    assert set(SPLITS) == {"train", "heldout"}


def test_train_and_heldout_share_no_repository_content() -> None:
    def content(split: str) -> tuple[set[str], set[str]]:
        packages, files = set(), set()
        for name in SPLITS[split]:
            tree = read_tree(suite_spec(name).repo_dir)
            packages |= {p.split("/")[0] for p in tree if "/" in p and not p.startswith("tests/")}
            files |= {text for text in tree.values() if text.strip()}
        return packages, files

    train_packages, train_files = content("train")
    held_packages, held_files = content("heldout")
    assert not train_packages & held_packages
    assert not train_files & held_files


def test_both_splits_hold_every_difficulty(originals: dict[str, Task]) -> None:
    for split, members in SPLITS.items():
        tiers = Counter(t.difficulty for t in originals.values() if t.suite in members)
        assert all(tiers[d] >= 4 if d != "hard" else tiers[d] >= 2 for d in ("easy", "medium", "hard")), (split, tiers)


def test_split_table_in_the_readme_matches_the_suites(capsys: pytest.CaptureFixture[str]) -> None:
    from agent_rl.cli import main

    assert main(["tasks", "splits"]) == 0
    printed = capsys.readouterr().out.splitlines()[1:]
    readme = (Path(__file__).resolve().parents[2] / "envs" / "suites" / "README.md").read_text()
    for line in printed:
        name, spec, easy, medium, hard, total, floor_count, libraries = re.split(r"\s{2,}", line.strip())
        row = f"| `{spec}` | {libraries} | {easy} | {medium} | {hard} | {total} | {floor_count} |"
        assert row in readme, row


# --- the floor tier on every built-in task ---------------------------------------------------


def _fixes(task: Task) -> list[dict]:
    return task.extra["floor"]["fixes"]


def test_one_floor_variant_per_task_grading_unchanged(floor: list[Task], originals: dict[str, Task]) -> None:
    assert len(floor) == len(originals)
    for task in floor:
        source = originals[task.extra["floor"]["source_id"]]
        assert task.instance_id == source.instance_id + "-floor" and task.difficulty == "floor"
        for name in ("repo", "base_commit", "patch", "test_patch", "FAIL_TO_PASS", "PASS_TO_PASS", "test_files", "suite"):
            assert getattr(task, name) == getattr(source, name), (task.instance_id, name)
        assert task.problem_statement != source.problem_statement


def test_floor_statements_name_a_real_file_function_and_line(floor: list[Task]) -> None:
    for task in floor:
        for fix in _fixes(task):
            path = Path(task.repo) / fix["path"]  # the materialized buggy repo, as the agent sees it
            assert path.is_file(), (task.instance_id, fix)
            lines = path.read_text(encoding="utf-8").splitlines()
            assert 1 <= fix["line"] <= len(lines)
            where = f"`{fix['path']}`" + (f", function `{fix['function']}`" if fix["function"] else "")
            assert f"{where}, line {fix['line']}" in task.problem_statement
            # The statement's wrong text starts at the named line of that file.
            shown = task.problem_statement.split(f"line {fix['line']}, this text is wrong:", 1)[1]
            first_wrong = re.search(r"```python\n(.*)\n", shown).group(1)
            assert lines[fix["line"] - 1] == first_wrong, task.instance_id
            if fix["function"]:
                assert re.search(rf"(def|class) {re.escape(fix['function'].rsplit('.', 1)[-1])}\b", path.read_text())


def test_floor_fixes_replayed_as_edits_give_the_gold_state(floor: list[Task]) -> None:
    clean_trees = {name: read_tree(suite_spec(name).repo_dir) for name in list_suites()}
    for task in floor:
        buggy = {p: (Path(task.repo) / p).read_text(encoding="utf-8") for p in {f["path"] for f in _fixes(task)}}
        for fix in locate_fixes(task.patch, buggy.__getitem__):
            # The env's own search/replace: the wrong text must occur exactly once.
            buggy[fix.path] = apply_str_replace(buggy[fix.path], fix.wrong, fix.right, path=fix.path)
            assert fix.wrong in task.problem_statement and fix.right.rstrip("\n") in task.problem_statement
        for path, text in buggy.items():
            assert text == clean_trees[task.suite][path], (task.instance_id, path)


def test_floor_prefix_on_builtin_equals_the_floor_tier() -> None:
    # Read from git (the `floor:` path) or from the in-memory tree (the tier): the same tasks.
    via_prefix = load_tasks("floor:builtin:lrukit")
    via_tier = load_tasks("builtin:lrukit:floor")
    assert [t.to_dict() for t in via_prefix] == [t.to_dict() for t in via_tier]


def test_pure_insertions_anchor_on_a_neighbouring_line() -> None:
    buggy = "def f(x):\n    y = x\n    return y\n"
    patch = (
        "--- a/m.py\n+++ b/m.py\n@@ -1,3 +1,4 @@\n def f(x):\n     y = x\n+    y += 1\n     return y\n"
    )
    [block] = parse_blocks(patch)
    assert (block.start, block.removed, block.added) == (2, [], ["    y += 1\n"])
    [fix] = locate_fixes(patch, {"m.py": buggy}.__getitem__)
    assert fix == Fix("m.py", 2, "f", "    y = x\n", "    y = x\n    y += 1\n")
    assert apply_str_replace(buggy, fix.wrong, fix.right) == "def f(x):\n    y = x\n    y += 1\n    return y\n"


def test_repeated_lines_grow_until_unique() -> None:
    buggy = "a = 1\nb = 2\na = 1\nc = 3\n"
    patch = "--- a/m.py\n+++ b/m.py\n@@ -3,2 +3,2 @@\n-a = 1\n+a = 9\n c = 3\n"
    [fix] = locate_fixes(patch, {"m.py": buggy}.__getitem__)
    assert buggy.count(fix.wrong) == 1 and fix.wrong == "b = 2\na = 1\n" and fix.right == "b = 2\na = 9\n"


def test_hunk_lines_that_look_like_headers_are_content() -> None:
    buggy = "x = 1\n-- sql comment\ny = 2\n"
    patch = "--- a/m.sql\n+++ b/m.sql\n@@ -1,3 +1,3 @@\n x = 1\n--- sql comment\n+-- SQL comment\n y = 2\n"
    [fix] = locate_fixes(patch, {"m.sql": buggy}.__getitem__)
    assert (fix.path, fix.line, fix.wrong, fix.right) == ("m.sql", 2, "-- sql comment\n", "-- SQL comment\n")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("", "no gold patch"),
        ("--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+x = 1\n", "creates a file"),
    ],
)
def test_tasks_without_a_usable_gold_patch_are_refused(patch: str, message: str) -> None:
    task = Task(instance_id="t-1", repo="/nonexistent", base_commit="0" * 40, problem_statement="x", patch=patch)
    with pytest.raises(TaskError, match=f"task 't-1'.*{message}"):
        floor_variant(task, {"new.py": ""}.__getitem__)


# --- synthesized tasks --------------------------------------------------------------------


def test_floor_variant_of_synthesized_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real synth task writing (git repos, gold diffs) for every mutation of a small module,
    then `floor:<tasks.jsonl>`: the floor points at the mutated line the synth record names."""
    monkeypatch.setenv("AGENT_RL_CACHE", str(tmp_path / "cache"))
    from test_synth_real import TINY

    from envs.synth.candidates import CheckedCandidate
    from envs.synth.detect import ProjectSetup
    from envs.synth.mutations import enumerate_mutations
    from envs.synth.pipeline import write_task

    clean = {p: t.encode() for p, t in TINY.items()}
    setup = ProjectSetup(["true"], "python3 -m pytest", [], ["tests/test_ops.py"], ["tinycalc/ops.py"])
    mutations = enumerate_mutations("tinycalc/ops.py", TINY["tinycalc/ops.py"])
    assert len({m.strategy for m in mutations}) >= 3
    f2p, p2p = ["tests/test_ops.py::test_total"], ["tests/test_ops.py::test_clamp_low"]
    tasks = [write_task(CheckedCandidate(m, "kept", f2p, p2p), "tinycalc", clean, setup, seed=0) for m in mutations]
    out = tmp_path / "tasks.jsonl"
    import json

    out.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in tasks))

    floor = load_tasks(f"floor:{out}")
    assert [t.instance_id for t in floor] == [t.instance_id + "-floor" for t in tasks]
    for task, source in zip(floor, tasks):
        record = source.extra["synth"]
        [fix] = _fixes(task)
        assert fix["path"] == record["file"] and fix["function"] == record["function"]
        buggy = subprocess.run(["git", "show", f"{task.base_commit}:{fix['path']}"], cwd=task.repo,
                               capture_output=True, text=True, check=True).stdout
        [located] = locate_fixes(task.patch, lambda _: buggy)
        # The named line is the mutated one, or the line just above a deleted statement.
        assert located.line <= record["line"] <= located.line + located.wrong.count("\n"), (record, located)
        fixed = apply_str_replace(buggy, located.wrong, located.right)
        assert fixed == TINY["tinycalc/ops.py"], record["strategy"]
        assert task.FAIL_TO_PASS == f2p and task.patch == source.patch and task.test_patch == source.test_patch


# --- Docker: floor tasks grade exactly like their sources ------------------------------------


@pytest.mark.docker
def test_floor_tasks_validate_gold_resolves_empty_does_not(floor: list[Task]) -> None:
    from envs.validate import validate_tasks

    picked = [t for t in floor if t.instance_id in {"semvertools-001-floor", "spanset-010-floor"}]
    assert len(picked) == 2
    results = validate_tasks(picked, runs=1, workers=2)
    assert all(r.valid for r in results), [(r.instance_id, r.problems) for r in results]

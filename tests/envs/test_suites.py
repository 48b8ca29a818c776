"""The built-in task suites: every suite loads, materializes deterministically, and is sound.

No Docker here: these are the local checks on the suite files and the materialized repos.
Whether the gold patch really resolves each task inside the sandbox is `agent-rl tasks
validate`'s job; `python -m envs.suites.refresh --check` re-runs the tests locally.
"""
from __future__ import annotations

import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

from envs.suites import SuiteError, list_suites, load_builtin, load_suite, suite_spec
from envs.suites.materialize import materialize
from envs.suites.refresh import check_task, leaked_fix_lines
from envs.suites.spec import apply_bug, fingerprint, parse_suite, read_tree
from envs.tasks import Task

MIN_LIBRARIES = 6
MIN_TASKS = 60
MIN_VISIBLE_TESTS = 30
MIN_TASKS_PER_LIBRARY = 10


def _git(repo: str, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> list[Task]:
    return load_suite(cache_dir=str(tmp_path_factory.mktemp("cache-a")))


@pytest.fixture(scope="module")
def by_suite(tasks: list[Task]) -> dict[str, list[Task]]:
    grouped: dict[str, list[Task]] = {}
    for task in tasks:
        grouped.setdefault(task.suite, []).append(task)
    return grouped


# --- the acceptance bar ----------------------------------------------------------------


def test_every_suite_loads(by_suite: dict[str, list[Task]]) -> None:
    assert sorted(by_suite) == list_suites()
    for name in list_suites():
        assert [t.instance_id for t in by_suite[name]] == [t.id for t in suite_spec(name).tasks]


def test_enough_libraries_and_tasks(tasks: list[Task]) -> None:
    libraries = list_suites()
    assert len(libraries) >= MIN_LIBRARIES, f"only {len(libraries)} libraries: {libraries}"
    assert len(tasks) >= MIN_TASKS, f"only {len(tasks)} tasks"


@pytest.mark.parametrize("name", list_suites())
def test_each_library_has_a_difficulty_mix(name: str) -> None:
    counts = Counter(t.difficulty for t in suite_spec(name).tasks)
    assert sum(counts.values()) >= MIN_TASKS_PER_LIBRARY, counts
    assert counts["easy"] >= 3 and counts["medium"] >= 3 and counts["hard"] >= 2, counts


@pytest.mark.parametrize("name", list_suites())
def test_each_library_has_enough_visible_tests(name: str, by_suite: dict[str, list[Task]]) -> None:
    hidden = {f for t in by_suite[name] for f in t.test_files}
    node_ids = {n for t in by_suite[name] for n in t.FAIL_TO_PASS + t.PASS_TO_PASS}
    # Count test functions, not parametrized cases: 30 cases of one function is one test.
    functions = {n.split("[", 1)[0] for n in node_ids if n.split("::", 1)[0] not in hidden}
    assert len(functions) >= MIN_VISIBLE_TESTS, f"{name}: {len(functions)} visible test functions"


# --- task fields -----------------------------------------------------------------------


def test_task_fields(tasks: list[Task]) -> None:
    for task in tasks:
        assert task.instance_id.startswith(task.suite + "-")
        assert task.difficulty in ("easy", "medium", "hard")
        assert task.version == "1.0" and task.test_cmd == "python3 -m pytest"
        assert task.test_files and all(f.startswith("tests/test_") for f in task.test_files)
        assert task.FAIL_TO_PASS, task.instance_id
        hidden_nodes = [n for n in task.FAIL_TO_PASS if n.split("::", 1)[0] in task.test_files]
        assert hidden_nodes, f"{task.instance_id}: no hidden test in FAIL_TO_PASS"
        assert not set(task.FAIL_TO_PASS) & set(task.PASS_TO_PASS)
        # Another task's hidden tests never leak into this task's lists.
        for node in task.PASS_TO_PASS:
            assert node.split("::", 1)[0] not in task.test_files
            assert "test_issue_" not in node, node


def test_problem_statements_do_not_quote_the_fix(tasks: list[Task]) -> None:
    leaks = {t.instance_id: leaked_fix_lines(t) for t in tasks}
    assert not {k: v for k, v in leaks.items() if v}


def test_easy_issues_are_short(tasks: list[Task]) -> None:
    # Small models have tiny contexts; easy issues must stay short and concrete.
    long_ones = {t.instance_id: len(t.problem_statement.split()) for t in tasks if t.difficulty == "easy"}
    assert not {k: n for k, n in long_ones.items() if n >= 120}


# --- the materialized repos ------------------------------------------------------------


def test_materialization_is_deterministic(tasks: list[Task], tmp_path: Path) -> None:
    again = {t.instance_id: t for t in load_suite(cache_dir=str(tmp_path / "cache-b"))}
    for task in tasks:
        other = again[task.instance_id]
        assert other.repo != task.repo
        assert (other.base_commit, other.patch, other.test_patch) == (task.base_commit, task.patch, task.test_patch)


def test_reloading_reuses_the_cache(tasks: list[Task]) -> None:
    cache = str(Path(tasks[0].repo).parent.parent)
    again = load_suite(cache_dir=cache)
    assert [t.repo for t in again] == [t.repo for t in tasks]


def test_repo_has_one_commit_and_no_remotes(tasks: list[Task]) -> None:
    for task in tasks:
        assert _git(task.repo, "rev-list", "--all").split() == [task.base_commit]
        assert _git(task.repo, "remote").strip() == ""
        assert _git(task.repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_gold_and_test_patches_apply(tasks: list[Task], tmp_path: Path) -> None:
    for task in tasks:
        for name, patch in (("gold", task.patch), ("tests", task.test_patch)):
            file = tmp_path / f"{task.instance_id}-{name}.diff"
            file.write_text(patch)
            proc = subprocess.run(["git", "apply", "--check", str(file)], cwd=task.repo, capture_output=True, text=True)
            assert proc.returncode == 0, f"{task.instance_id} {name}: {proc.stderr}"


def test_hidden_tests_are_absent_from_the_repo(tasks: list[Task]) -> None:
    for task in tasks:
        tracked = set(_git(task.repo, "ls-files").split())
        for path in task.test_files:
            assert not (Path(task.repo) / path).exists()
            assert path not in tracked
        # Nor is any other task's hidden test, nor the clean code as a loose git object.
        assert not any("test_issue_" in p for p in tracked)
        assert _unreachable(task.repo) == []


def _unreachable(repo: str) -> list[str]:
    out = _git(repo, "fsck", "--unreachable", "--no-reflogs", "--no-progress")
    return [line for line in out.splitlines() if line.startswith("unreachable")]


def test_concurrent_materialization_builds_one_directory(tmp_path: Path) -> None:
    suite = suite_spec(list_suites()[0])
    spec = suite.tasks[0]
    clean = read_tree(suite.repo_dir)
    buggy = apply_bug(clean, spec, suite.tasks_file)
    key = fingerprint(clean, spec)
    results = []

    def build() -> None:
        results.append(materialize(spec, clean, buggy, key, tmp_path))

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({(r.repo, r.base_commit, r.patch) for r in results}) == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"{spec.id}-{key}"]


def test_refresh_reproduces_lists_for_one_task(tasks: list[Task]) -> None:
    # Real pytest on the buggy and gold states of one task; the full run is `refresh --check`.
    task = tasks[0]
    outcome = check_task(task)
    assert outcome.problems == ()
    assert outcome.FAIL_TO_PASS == sorted(task.FAIL_TO_PASS)
    assert outcome.PASS_TO_PASS == sorted(task.PASS_TO_PASS)


# --- spec strings and errors -----------------------------------------------------------


def test_load_builtin_spec(tasks: list[Task]) -> None:
    cache = str(Path(tasks[0].repo).parent.parent)
    name = list_suites()[0]
    easy = load_builtin(f"builtin:{name}:easy", cache_dir=cache)
    assert easy and all(t.suite == name and t.difficulty == "easy" for t in easy)
    assert len(load_builtin("builtin:hard", cache_dir=cache)) == sum(t.difficulty == "hard" for t in tasks)


@pytest.mark.parametrize("spec", ["builtin:impossible", "suites:easy", "builtin:easy:easy"])
def test_bad_builtin_spec(spec: str) -> None:
    with pytest.raises(SuiteError, match="task spec"):
        load_builtin(spec)


def test_unknown_suite_and_difficulty() -> None:
    with pytest.raises(SuiteError, match="unknown built-in suite 'nope'"):
        load_suite("nope")
    with pytest.raises(SuiteError, match="unknown difficulty 'trivial'"):
        load_suite(difficulty="trivial")


GOOD_TASK = """\
  - id: toy-001
    difficulty: easy
    problem_statement: |
      add() is wrong
    bug:
      - file: toy/core.py
        old: "a + b"
        new: "a - b"
    hidden_tests:
      - file: tests/test_issue_toy_001.py
        content: |
          from toy.core import add
          def test_add():
              assert add(1, 2) == 3
"""


def _toy_suite(root: Path, task_text: str) -> Path:
    suite = root / "toy"
    (suite / "repo" / "toy").mkdir(parents=True)
    (suite / "repo" / "toy" / "core.py").write_text("def add(a, b):\n    return a + b\n")
    (suite / "tasks.yaml").write_text("suite: toy\ntasks:\n" + task_text)
    return suite


@pytest.mark.parametrize(
    "replace,expected",
    [
        (("difficulty: easy", "difficulty: trivial"), "task 'toy-001': field difficulty"),
        (("    difficulty: easy\n", ""), "task 'toy-001': field difficulty"),
        (("id: toy-001", "id: toy-1"), "field id"),
        (("    problem_statement: |\n      add() is wrong\n", "    problem_statement: ''\n"), "field problem_statement"),
        (("file: toy/core.py", "file: ../core.py"), "task 'toy-001': field bug[0].file"),
        (("old: \"a + b\"", "olde: \"a + b\""), "task 'toy-001': field bug[0]: unknown key(s) 'olde'"),
        (("file: tests/test_issue_toy_001.py", "file: toy/core.py"), "field hidden_tests[0].file"),
        (("hidden_tests:", "hidden_test:"), "unknown key(s) 'hidden_test'"),
    ],
)
def test_malformed_tasks_yaml_names_task_and_field(tmp_path: Path, replace: tuple[str, str], expected: str) -> None:
    old, new = replace
    assert old in GOOD_TASK
    suite = _toy_suite(tmp_path, GOOD_TASK.replace(old, new))
    with pytest.raises(SuiteError) as err:
        parse_suite(suite)
    assert expected in str(err.value)
    assert str(suite / "tasks.yaml") in str(err.value)


def test_bug_text_must_occur_exactly_once(tmp_path: Path) -> None:
    suite = parse_suite(_toy_suite(tmp_path, GOOD_TASK.replace('old: "a + b"', 'old: "a * b"')))
    with pytest.raises(SuiteError, match=r"task 'toy-001': field bug\[0\]\.old: found 0 times in toy/core.py"):
        apply_bug(read_tree(suite.repo_dir), suite.tasks[0], suite.tasks_file)


def test_toy_suite_parses_and_materializes(tmp_path: Path) -> None:
    suite = parse_suite(_toy_suite(tmp_path, GOOD_TASK))
    spec = suite.tasks[0]
    clean = read_tree(suite.repo_dir)
    built = materialize(spec, clean, apply_bug(clean, spec, suite.tasks_file), fingerprint(clean, spec), tmp_path / "c")
    assert "return a - b" in (built.repo / "toy" / "core.py").read_text()
    assert "-    return a - b\n+    return a + b" in built.patch
    assert "new file mode 100644" in built.test_patch and "+++ b/tests/test_issue_toy_001.py" in built.test_patch

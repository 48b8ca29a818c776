"""Run every built-in task's tests and write its FAIL_TO_PASS / PASS_TO_PASS to lists.json.

    python -m envs.suites.refresh [--suite NAME ...] [--check] [--jobs N]

Per task: materialize the buggy repo, copy its work tree to a temp dir, apply the hidden
tests, run pytest (buggy state), apply the gold patch, run pytest again (gold state).
FAIL_TO_PASS = pass on gold but not on buggy; PASS_TO_PASS = pass on both. A task is an
error (named, and the run exits 1) when:
  - a `bug.old` text is not found exactly once, or the gold patch does not apply;
  - any test fails on the gold state;
  - FAIL_TO_PASS is empty, or some hidden test does not fail on the buggy state;
  - the problem statement quotes a line the gold patch adds (it would give the fix away).
This is the local pre-check; `agent-rl tasks validate` repeats the gold/empty check in Docker.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from envs.suites import build_task, list_suites, suite_spec
from envs.suites.materialize import default_cache_dir, git
from envs.suites.spec import SuiteError, SuiteSpec, TaskTestLists, fingerprint, read_lists, read_tree, write_lists
from envs.tasks import Task

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
_PYTEST_TIMEOUT_S = 300


@dataclass(frozen=True)
class TaskOutcome:
    task_id: str
    FAIL_TO_PASS: list[str]
    PASS_TO_PASS: list[str]
    problems: tuple[str, ...]


def parse_junit(xml_text: str) -> dict[str, str]:
    """{pytest node id: passed|failed|skipped} from a junit XML in pytest's xunit1 family.

    xunit1 gives each testcase a `file` attribute, so node ids need no guessing about which
    dots in `classname` are packages and which are classes. Collection errors appear as a
    testcase with no file; they are reported under the module path as failed.
    """
    statuses: dict[str, str] = {}
    rank = {PASSED: 0, SKIPPED: 1, FAILED: 2}
    for case in ET.fromstring(xml_text).iter("testcase"):
        name = case.get("name", "")
        classname = case.get("classname", "")
        file = case.get("file")
        if file:
            module = file[:-3].replace("/", ".") if file.endswith(".py") else file
            inner = classname[len(module) + 1 :] if classname.startswith(module + ".") else ""
            node = "::".join([file, *inner.split("."), name]) if inner else f"{file}::{name}"
        else:
            node = f"<collection>::{classname or name}"
        if case.find("failure") is not None or case.find("error") is not None:
            status = FAILED
        elif case.find("skipped") is not None:
            status = SKIPPED
        else:
            status = PASSED
        # A test can appear twice (a failure in the call and an error in teardown): keep the worst.
        if rank[status] >= rank[statuses.get(node, PASSED)]:
            statuses[node] = status
    return statuses


def run_pytest(workdir: Path) -> dict[str, str]:
    """Run the repo's tests the way the grader does, with this interpreter, and parse the result."""
    with tempfile.TemporaryDirectory(prefix="agent-rl-junit-") as tmp:
        xml = Path(tmp) / "report.xml"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTHONPATH")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # The grader's container has plain pytest; plugins from this venv must not change results.
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        cmd = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "-o", "junit_family=xunit1", f"--junitxml={xml}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=_PYTEST_TIMEOUT_S)
        if not xml.is_file():
            raise SuiteError(f"pytest wrote no report in {workdir} (exit {proc.returncode}): {proc.stdout[-2000:]}")
        return parse_junit(xml.read_text(encoding="utf-8"))


def _apply(patch: str, workdir: Path, what: str) -> None:
    patch_file = workdir.parent / f"{what}.diff"
    patch_file.write_text(patch, encoding="utf-8")
    git(["apply", "--whitespace=nowarn", str(patch_file)], workdir)


def leaked_fix_lines(task: Task, min_chars: int = 10) -> list[str]:
    """Lines the gold patch adds that the problem statement quotes verbatim.

    Very short lines (`return x`, `)`) are skipped: they occur in any text about code.
    """
    added = [
        line[1:].strip()
        for line in task.patch.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return sorted({line for line in added if len(line) >= min_chars and line in task.problem_statement})


def _run_states(task: Task) -> tuple[dict[str, str], dict[str, str]]:
    """Test results of (buggy + hidden tests, gold + hidden tests) in a scratch copy."""
    with tempfile.TemporaryDirectory(prefix=f"agent-rl-refresh-{task.instance_id}-") as tmp:
        workdir = Path(tmp) / "repo"
        shutil.copytree(task.repo, workdir, ignore=shutil.ignore_patterns(".git"))
        _apply(task.test_patch, workdir, "test_patch")
        buggy = run_pytest(workdir)
        _apply(task.patch, workdir, "gold")
        gold = run_pytest(workdir)
    return buggy, gold


def check_task(task: Task) -> TaskOutcome:
    """Run buggy and gold states of one materialized task; return its lists and any problems."""
    try:
        buggy, gold = _run_states(task)
    except (SuiteError, subprocess.TimeoutExpired) as exc:
        return TaskOutcome(task.instance_id, [], [], (str(exc),))
    problems: list[str] = []
    hidden = set(task.test_files)

    gold_failures = sorted(node for node, status in gold.items() if status == FAILED)
    if gold_failures:
        problems.append(f"tests fail on the gold state: {', '.join(gold_failures)}")
    fail_to_pass = sorted(n for n, s in gold.items() if s == PASSED and buggy.get(n) != PASSED)
    pass_to_pass = sorted(n for n, s in gold.items() if s == PASSED and buggy.get(n) == PASSED)
    hidden_nodes = [n for n in gold if n.split("::", 1)[0] in hidden]
    if not hidden_nodes:
        problems.append(f"hidden test files {sorted(hidden)} collected no tests on the gold state")
    not_failing = sorted(n for n in hidden_nodes if n not in fail_to_pass)
    if not_failing:
        problems.append(f"hidden tests that do not fail on the buggy state: {', '.join(not_failing)}")
    if not fail_to_pass:
        problems.append("FAIL_TO_PASS is empty: no test tells the buggy state from the gold one")
    leaked = leaked_fix_lines(task)
    if leaked:
        problems.append(f"problem_statement quotes lines of the fix: {leaked}")
    return TaskOutcome(task.instance_id, fail_to_pass, pass_to_pass, tuple(problems))


def refresh_suite(suite: SuiteSpec, *, jobs: int, cache_dir: Path, check_only: bool) -> list[str]:
    """Refresh one library's lists.json; return error lines (empty when all tasks are sound)."""
    clean = read_tree(suite.repo_dir)
    errors: list[str] = []
    tasks: list[Task] = []
    for spec in suite.tasks:
        try:
            tasks.append(build_task(suite, spec, clean, cache_dir, lists_required=False))
        except SuiteError as exc:
            errors.append(str(exc))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        outcomes = list(pool.map(check_task, tasks))

    keys = {spec.id: fingerprint(clean, spec) for spec in suite.tasks}
    fresh: dict[str, TaskTestLists] = {}
    for outcome in outcomes:
        for problem in outcome.problems:
            errors.append(f"{suite.tasks_file}: task {outcome.task_id!r}: {problem}")
        fresh[outcome.task_id] = TaskTestLists(keys[outcome.task_id], outcome.FAIL_TO_PASS, outcome.PASS_TO_PASS)
    if errors:
        return errors
    if check_only:
        if read_lists(suite) != fresh:
            return [f"{suite.lists_file}: out of date; run `python -m envs.suites.refresh --suite {suite.name}`"]
        return []
    write_lists(suite, fresh)
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m envs.suites.refresh", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", action="append", help="library to refresh (repeatable; default: all)")
    parser.add_argument("--check", action="store_true", help="verify lists.json is current; write nothing")
    parser.add_argument("--jobs", type=int, default=2, help="tasks checked in parallel (default 2)")
    parser.add_argument("--cache-dir", help="where materialized repos go (default $AGENT_RL_CACHE/suites)")
    args = parser.parse_args(argv)

    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    failed = False
    for name in args.suite or list_suites():
        started = time.monotonic()
        try:
            suite = suite_spec(name)
            errors = refresh_suite(suite, jobs=args.jobs, cache_dir=cache_dir, check_only=args.check)
        except SuiteError as exc:
            errors = [str(exc)]
        elapsed = time.monotonic() - started
        if errors:
            failed = True
            print(f"FAIL {name} ({elapsed:.1f}s)")
            for line in errors:
                print(f"  - {line}")
        else:
            count = len(suite.tasks)
            print(f"ok   {name}: {count} tasks {'checked' if args.check else 'refreshed'} ({elapsed:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Run every built-in task's tests and write its FAIL_TO_PASS / PASS_TO_PASS to lists.json.

    python -m envs.suites.refresh [--suite NAME ...] [--check] [--jobs N]

Per task: materialize the buggy repo, copy its work tree to a temp dir, apply the hidden
tests, run pytest (buggy state), apply the gold patch, run pytest again (gold state), both
with the grader's command line (`envs.pytest_protocol`). FAIL_TO_PASS = pass on gold, fail
on buggy; PASS_TO_PASS = pass on both; skipped, xfailed and xpassed tests are in neither and
never make a task an error. A task is an error (named, and the run exits 1) when:
  - a `bug.old` text is not found exactly once, or the gold patch does not apply;
  - any test fails (or a module does not collect) on the gold state;
  - FAIL_TO_PASS is empty, or some hidden test that runs does not fail on the buggy state;
  - the problem statement quotes a line the gold patch adds (it would give the fix away).
This is the local pre-check; `agent-rl tasks validate` repeats the gold/empty check in Docker.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from envs.pytest_protocol import Outcome, run_local, split_lists
from envs.suites import build_task, list_suites, suite_spec
from envs.suites.materialize import default_cache_dir, git
from envs.suites.spec import SuiteError, SuiteSpec, TaskTestLists, fingerprint, read_lists, read_tree, write_lists
from envs.tasks import Task

_PYTEST_TIMEOUT_S = 300


@dataclass(frozen=True)
class TaskOutcome:
    """One task's fresh lists and what is wrong with it (empty when it is sound)."""

    task_id: str
    FAIL_TO_PASS: list[str]
    PASS_TO_PASS: list[str]
    problems: tuple[str, ...]


@dataclass(frozen=True)
class StateRun:
    """The outcome of every test in one state of the repository, and the modules that did not collect."""

    outcomes: dict[str, Outcome]
    collection_errors: tuple[str, ...] = ()


def run_pytest(workdir: Path) -> StateRun:
    """Run the repo's tests the way the grader does, with this interpreter, and parse the result."""
    run = run_local(workdir, python=sys.executable, timeout=_PYTEST_TIMEOUT_S)
    if run.junit is None:
        raise SuiteError(f"pytest wrote no report in {workdir} (exit {run.exit_code}): {run.output[-2000:]}")
    return StateRun(run.junit.outcomes(), tuple(run.junit.collection_errors))


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


def _run_states(task: Task) -> tuple[StateRun, StateRun]:
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

    gold_failures = sorted(node for node, outcome in gold.outcomes.items() if outcome.is_failure)
    gold_failures += [f"{module} (collection error)" for module in gold.collection_errors]
    if gold_failures:
        problems.append(f"tests fail on the gold state: {', '.join(gold_failures)}")
    fail_to_pass, pass_to_pass = split_lists(buggy.outcomes, gold.outcomes)
    hidden_nodes = [n for n in gold.outcomes if n.split("::", 1)[0] in hidden]
    if not hidden_nodes:
        problems.append(f"hidden test files {sorted(hidden)} collected no tests on the gold state")
    # A hidden test that is skipped or xfail-marked is in neither list and is no problem.
    not_failing = sorted(n for n in hidden_nodes if not gold.outcomes[n].is_neutral and n not in fail_to_pass)
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
    """The command line (see the module doc); exit status 1 when any suite has an error."""
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

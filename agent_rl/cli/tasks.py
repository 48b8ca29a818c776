"""`agent-rl tasks list|show|validate|splits`: look at task sets and check that they are well-posed."""
from __future__ import annotations

import argparse
import json
import sys


def _add_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--suite", help="a builtin suite name (same as --tasks builtin:SUITE)")
    source.add_argument(
        "--tasks",
        help="task spec: builtin, builtin:easy, builtin:SUITE|SPLIT[:DIFFICULTY] (splits: train, heldout; "
        "difficulty: easy, medium, hard, floor), tasks.jsonl, floor:SPEC, …",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tasks", help="list, show and validate tasks")
    sub = parser.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="table of tasks: id, suite, difficulty, #F2P, #P2P")
    _add_source(listing)
    listing.add_argument("--json", action="store_true", help="print the public view of each task as JSON lines")
    listing.set_defaults(func=run_list)

    show = sub.add_parser("show", help="one task's public view and its target tests")
    show.add_argument("instance_id")
    _add_source(show)
    show.add_argument("--gold", action="store_true", help="also print the gold patch and the hidden test patch")
    show.set_defaults(func=run_show)

    validate = sub.add_parser(
        "validate",
        help="gold patch resolves, empty patch does not (N runs each, fresh containers)",
        description="Grade each task's gold patch and the empty patch --runs times each. Writes "
        "DIR/validation.json; exits 1 if any task is invalid or flaky.",
    )
    _add_source(validate)
    validate.add_argument("--ids", nargs="+", help="only these task ids")
    validate.add_argument("--runs", type=int, default=3, help="gradings per patch (default 3)")
    validate.add_argument("--workers", type=int, default=2, help="tasks validated at once (default 2)")
    validate.add_argument("--out", default="validation", help="output directory (default ./validation)")
    validate.set_defaults(func=run_validate)

    splits = sub.add_parser("splits", help="the built-in train / held-out splits: libraries and tasks per tier")
    splits.set_defaults(func=run_splits)


def _load(args: argparse.Namespace):  # -> list[Task]
    from envs.tasks import load_tasks

    spec = f"builtin:{args.suite}" if args.suite else (args.tasks or "builtin")
    return load_tasks(spec)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _fail(command: str, exc: Exception) -> int:
    print(f"tasks {command}: {exc}", file=sys.stderr)
    return 2


def run_list(args: argparse.Namespace) -> int:
    from envs.tasks import TaskError

    try:
        tasks = _load(args)
    except TaskError as exc:
        return _fail("list", exc)
    if args.json:
        for task in tasks:
            print(json.dumps(task.public_view()))
        return 0
    rows = [("ID", "SUITE", "DIFFICULTY", "#F2P", "#P2P")] + [
        (t.instance_id, t.suite or "-", t.difficulty or "-", str(len(t.FAIL_TO_PASS)), str(len(t.PASS_TO_PASS)))
        for t in tasks
    ]
    _print_table(rows)
    print(f"{len(tasks)} tasks")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from envs.tasks import TaskError, TaskStore

    try:
        task = TaskStore(_load(args)).get(args.instance_id)
    except TaskError as exc:
        return _fail("show", exc)
    view = task.public_view()
    for key in ("instance_id", "suite", "difficulty", "repo", "base_commit"):
        print(f"{key}: {view[key]}")
    print(f"\nproblem statement:\n{view['problem_statement'].rstrip()}\n")
    for name in ("FAIL_TO_PASS", "PASS_TO_PASS"):
        tests = getattr(task, name)
        print(f"{name} ({len(tests)}):")
        for test in tests:
            print(f"  {test}")
    if args.gold:
        print("\n--- gold patch (never shown to agents) ---")
        print(task.patch.rstrip() or "(empty)")
        print("\n--- hidden test patch ---")
        print(task.test_patch.rstrip() or "(empty)")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from envs.tasks import TaskError, TaskStore
    from envs.validate import validate_tasks, write_validation

    if args.runs < 1 or args.workers < 1:
        print("tasks validate: --runs and --workers must be >= 1", file=sys.stderr)
        return 2
    try:
        tasks = _load(args)
        if args.ids:
            store = TaskStore(tasks)
            tasks = [store.get(i) for i in args.ids]
    except TaskError as exc:
        return _fail("validate", exc)
    print(f"validating {len(tasks)} tasks, {args.runs} run(s) each of the gold and empty patch…")
    results = validate_tasks(tasks, runs=args.runs, workers=args.workers, progress=print)
    path = write_validation(results, args.out, runs=args.runs)
    invalid = [r for r in results if not r.valid]
    flaky = [r.instance_id for r in results if r.flaky]
    print(f"{len(results) - len(invalid)}/{len(results)} valid" + (f"; flaky: {', '.join(flaky)}" if flaky else ""))
    print(f"wrote {path}")
    return 1 if invalid else 0


def run_splits(args: argparse.Namespace) -> int:
    """Print each split's libraries and task counts per tier (from tasks.yaml; nothing is built)."""
    from collections import Counter

    from envs.suites import SPLITS, suite_spec
    from envs.suites.spec import DIFFICULTIES

    header = ("SPLIT", "SPEC", *DIFFICULTIES, "all", "floor", "LIBRARIES")
    rows = [header]
    for name, members in SPLITS.items():
        tiers = Counter(task.difficulty for lib in members for task in suite_spec(lib).tasks)
        total = sum(tiers.values())
        rows.append((name, f"builtin:{name}", *(str(tiers[d]) for d in DIFFICULTIES), str(total), str(total),
                     ", ".join(members)))
    _print_table(rows)
    return 0

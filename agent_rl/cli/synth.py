"""`agent-rl synth --repo PATH_OR_GIT_URL [--commit C] [--max-tasks N] [--strategies …] [--seed S] --out tasks.jsonl`."""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from envs.synth.mutations import STRATEGIES

    p = subparsers.add_parser(
        "synth",
        help="synthesize SWE tasks from a repository with passing tests (AST bug injection)",
        description="Build the repository's image, run its tests, plant seeded AST mutations, keep the "
        "bugs that break some passing tests and leave the rest passing (re-run to drop flaky ones), "
        "and write SWE-bench-compatible tasks validated by the grader. Writes the tasks to --out and "
        "synth_report.json beside it (candidates, kept and validated per strategy; timings).",
    )
    p.add_argument("--repo", required=True, help="local git repository or git URL")
    p.add_argument("--commit", default="HEAD", help="commit to start from (default HEAD)")
    p.add_argument("--max-tasks", type=int, default=20, help="tasks to keep at most (default 20)")
    p.add_argument("--max-candidates", type=int, default=None, help="mutations to check at most (default 4 × max-tasks)")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help=f"comma-separated mutation strategies (default all: {','.join(STRATEGIES)})")
    p.add_argument("--seed", type=int, default=0, help="fixes which candidates are tried, in which order")
    p.add_argument("--install-cmd", default=None, help="override the detected install step (runs as root at image build)")
    p.add_argument("--test-cmd", default=None, help="override the test command (a pytest command)")
    p.add_argument("--workers", type=int, default=2, help="containers checking candidates at once (default 2)")
    p.add_argument("--flaky-reruns", type=int, default=1, help="extra runs a kept bug must reproduce in (default 1)")
    p.add_argument("--no-validate", action="store_true", help="skip the gold/empty grading of every task")
    p.add_argument("--report", default=None, help="report path (default: synth_report.json beside --out)")
    p.add_argument("--out", required=True, help="tasks.jsonl to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from envs.synth.pipeline import SynthConfig, synthesize

    try:
        config = SynthConfig(
            repo=args.repo, out=args.out, commit=args.commit, max_tasks=args.max_tasks,
            max_candidates=args.max_candidates, strategies=[s.strip() for s in args.strategies.split(",") if s.strip()],
            seed=args.seed, install_cmd=args.install_cmd, test_cmd=args.test_cmd, workers=args.workers,
            flaky_reruns=args.flaky_reruns, validate=not args.no_validate, report=args.report,
        )
    except ValueError as exc:
        print(f"synth: {exc}", file=sys.stderr)
        return 2
    result = synthesize(config, progress=lambda msg: print(f"[synth] {msg}", file=sys.stderr))
    report = result.report
    if not result.ok:
        print(f"synth: {report['repo']}: {report['reason']}", file=sys.stderr)
        print(f"report: {config.report_path}", file=sys.stderr)
        return 1
    print(f"{len(result.tasks)} tasks → {config.out} (report: {config.report_path})")
    columns = ("enumerated", "checked", "kept", "validated", "written")
    print(f"{'strategy':<18}" + "".join(f"{c:>11}" for c in columns))
    for name, counts in report.get("per_strategy", {}).items():
        print(f"{name:<18}" + "".join(f"{counts.get(c, 0):>11}" for c in columns))
    print(f"took {report['timings']['total_s']:.1f}s")
    return 0

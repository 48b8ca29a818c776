"""`agent-rl grade predictions.jsonl --tasks S [--workers W] --out DIR`: SWE-bench-style grading."""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "grade",
        help="grade SWE-bench-format predictions, each in a fresh container",
        description="Grade predictions ({instance_id, model_patch, model_name_or_path}; JSONL, a JSON "
        "list or an id-keyed JSON object) against a task set. Writes DIR/report.json (SWE-bench run "
        "report: counts and id lists) and DIR/instances/<id>/report.json + patch.diff, plus the official "
        "harness's layout: DIR/logs/run_evaluation/RUN_ID/<model>/<id>/report.json and DIR/<model>.RUN_ID.json.",
    )
    p.add_argument("predictions", help="predictions file (.jsonl or .json)")
    p.add_argument("--tasks", required=True, help="task spec: builtin, builtin:easy, tasks.jsonl, …")
    p.add_argument("--workers", type=int, default=2, help="patches graded at once (default 2)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--run-id", default="agent-rl", help="run id of the official layout: DIR/logs/run_evaluation/"
                   "RUN_ID/<model>/<id>/report.json and DIR/<model>.RUN_ID.json (default agent-rl)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent_rl.eval.predictions import PredictionsFileError, grade_predictions_file

    if args.workers < 1:
        print("grade: --workers must be >= 1", file=sys.stderr)
        return 2
    try:
        report = grade_predictions_file(args.predictions, args.tasks, args.out, workers=args.workers,
                                        run_id=args.run_id)
    except (PredictionsFileError, ValueError) as exc:
        print(f"grade: {exc}", file=sys.stderr)
        return 2
    keys = ("total", "submitted", "completed", "resolved", "unresolved", "empty_patch", "error", "unknown")
    print("  ".join(f"{k}={report[f'{k}_instances']}" for k in keys))
    for iid, reason in report["reasons"].items():
        print(f"  {iid}: {reason}")
    for problem in report["problems"]:
        print(f"  {problem['where']}: {problem['reason']}")
    print(f"wrote {args.out}/report.json" + (f" and {report['official_report']}" if report.get("official_report") else ""))
    return 0

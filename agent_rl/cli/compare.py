"""`agent-rl compare DIR_A DIR_B … --out DIR`: overlay pass@k curves and tabulate differences."""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="overlay the pass@k curves of several `agent-rl eval` runs (first = baseline)",
        description="Overlay pass@k curves (log-2 k) of several evaluations in one PNG, tabulate "
        "their differences against the first (the baseline), and say at which k the baseline "
        "catches up (ProRL's analysis). Writes compare.json, compare.md and pass_at_k_compare.png.",
    )
    p.add_argument("eval_dirs", nargs="+", metavar="EVAL_DIR", help="output directories of `agent-rl eval`")
    p.add_argument("--out", required=True, help="directory for the comparison files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent_rl.eval.reports import ReportError, render_comparison_markdown, write_comparison

    try:
        comp = write_comparison(args.eval_dirs, args.out)
    except ReportError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    print(render_comparison_markdown(comp))
    print(f"wrote {args.out}/compare.json, compare.md, pass_at_k_compare.png")
    return 0

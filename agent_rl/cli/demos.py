"""`agent-rl demos`: expert demonstrations from gold patches, played in the real environment.

    agent-rl demos --tasks builtin --out runs/demos --concurrency 4

For every task with a gold patch a scripted expert views the code the patch changes, makes
the change with the env's own edit actions, runs the visible tests and submits; each episode
is graded by the normal grader and kept only if resolved. Writes DIR/trajectories.jsonl
(token-exact, loss mask on the expert's tokens: what `agent-rl sft` reads), DIR/sft.jsonl
(chat format) and DIR/report.json (one row per task), and prints a summary.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from agent_rl.engines.models import DEFAULT_MODEL


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demos", help="expert demonstrations from gold patches (real env, kept if resolved)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--tasks", required=True, help="task spec: builtin, builtin:<suite>[:<difficulty>], or a .jsonl file")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model alias or checkpoint whose tokenizer and chat template the demos use (default: {DEFAULT_MODEL})")
    p.add_argument("--limit", type=int, default=None, help="use only the first N tasks")
    p.add_argument("--concurrency", type=int, default=4, help="episodes in flight (default 4)")
    p.add_argument("--action-format", choices=("fenced", "json"), default="fenced", help="the env's action syntax (default fenced)")
    p.add_argument("--style", choices=("thorough", "direct"), default="thorough",
                   help="thorough: view, edit, run the visible tests, submit; direct: edit, submit (default thorough)")
    p.add_argument("--max-total-tokens", type=int, default=16384, help="context budget per episode (default 16384)")
    p.add_argument("--max-tokens-per-turn", type=int, default=4096, help="most tokens per expert reply (default 4096)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent_rl.demos.collect import collect_demos
    from agent_rl.engines.models import ModelNotFoundError, load_tokenizer
    from envs.tasks import TaskError, load_tasks
    from strictconfig import ConfigError

    try:
        tasks = load_tasks(args.tasks)[: args.limit] if args.limit else load_tasks(args.tasks)
        if not tasks:
            raise TaskError(f"no tasks in {args.tasks!r}")
        tokenizer = load_tokenizer(args.model)
    except (TaskError, ModelNotFoundError, OSError) as exc:
        print(f"agent-rl demos: error: {exc}", file=sys.stderr)
        return 2

    def done(row: Any) -> None:
        print(f"  {row.task_id:<24} {row.status:<10} turns={row.turns} {'' if row.status == 'kept' else row.reason[:120]}",
              flush=True)

    agent = {"max_total_tokens": args.max_total_tokens, "max_tokens_per_turn": args.max_tokens_per_turn}
    try:
        report = asyncio.run(collect_demos(
            tasks, tokenizer, args.out, concurrency=args.concurrency,
            env_config={"action_format": args.action_format}, agent_config=agent, on_done=done, style=args.style,
        ))
    except ConfigError as exc:
        print(f"agent-rl demos: error: {exc}", file=sys.stderr)
        return 2
    s = report.summary()
    print(f"demos: tasks {s['tasks']}, resolved {s['resolved']}, kept {s['kept']}, written {s['written']} "
          f"in {s['wall_s']:.0f}s → {args.out}/trajectories.jsonl, sft.jsonl, report.json")
    return 0 if report.kept else 1

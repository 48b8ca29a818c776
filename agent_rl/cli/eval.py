"""`agent-rl eval --model M --tasks S [--samples n] [--k 1,2,4] [--workers W] --out DIR`."""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="pass@k evaluation: n agent samples per task, graded in sandboxes (resumable)",
        description="Run the agent n times on every task, grade each sample in a fresh container, and "
        "write DIR/results.jsonl (one line per sample), DIR/report.json, DIR/report.md and "
        "DIR/pass_at_k.png. Re-running with the same DIR skips finished samples.",
    )
    p.add_argument("--model", required=True, help="model alias (smollm2-135m), HF checkpoint dir, or served model name")
    p.add_argument("--tasks", required=True, help="task spec: builtin, builtin:easy, tasks.jsonl, …")
    p.add_argument("--samples", "-n", type=int, default=1, help="samples per task (n; default 1)")
    p.add_argument("--k", default=None, help="comma-separated k values ≤ n (default: powers of two up to n)")
    p.add_argument("--workers", type=int, default=2, help="episodes in flight at once (default 2)")
    p.add_argument("--out", required=True, help="output directory (re-use it to resume)")
    p.add_argument("--engine", default="hf", choices=("hf", "openai", "vllm"), help="inference engine (default hf)")
    p.add_argument("--base-url", default=None, help="server URL for --engine openai (e.g. http://127.0.0.1:8000)")
    p.add_argument("--engine-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="extra EngineConfig key (repeatable), e.g. device=cuda, or tokenizer=smollm2-135m with --engine openai")
    p.add_argument("--max-turns", type=int, default=None, help="agent turn limit")
    p.add_argument("--max-tokens-per-turn", type=int, default=None, help="tokens the model may sample per turn")
    p.add_argument("--max-total-tokens", type=int, default=None, help="context budget per episode")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the agent's, 1.0)")
    p.add_argument("--seed", type=int, default=0, help="base seed; each (task, sample) derives its own")
    p.add_argument("--retry-errors", action="store_true", help="re-run samples whose earlier attempt errored")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _engine_options(args: argparse.Namespace) -> dict:
    import yaml

    options: dict = {"kind": args.engine}
    if args.base_url:
        options["base_url"] = args.base_url
    for item in args.engine_opt:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--engine-opt {item!r}: expected KEY=VALUE")
        options[key] = yaml.safe_load(value)  # numbers and booleans, like YAML configs
    return options


def _agent_options(args: argparse.Namespace) -> dict:
    options: dict = {}
    for key in ("max_turns", "max_tokens_per_turn", "max_total_tokens"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    if args.temperature is not None:
        options["sampling"] = {"temperature": args.temperature}
    return options


def run(args: argparse.Namespace) -> int:
    import asyncio

    from agent_rl.eval.evaluate import EvalConfig, run_eval
    from agent_rl.eval.passk import parse_ks
    from agent_rl.eval.reports import render_eval_markdown

    try:
        env = {"max_turns": args.max_turns} if args.max_turns is not None else {}
        config = EvalConfig(
            model=args.model, tasks=args.tasks, out=args.out, samples=args.samples,
            ks=parse_ks(args.k) if args.k else None, workers=args.workers, seed=args.seed,
            retry_errors=args.retry_errors, engine=_engine_options(args), agent=_agent_options(args), env=env,
        )
        report = asyncio.run(run_eval(config, progress=not args.no_progress))
    except ValueError as exc:  # bad flags, bad task spec, unknown config keys
        print(f"eval: {exc}", file=sys.stderr)
        return 2
    print(render_eval_markdown(report))
    print(f"wrote {args.out}/results.jsonl, report.json, report.md, pass_at_k.png")
    return 0

"""`agent-rl eval --model M --tasks S [--samples n] [--k 1,2,4] [--workers W] --out DIR [key=value ...]`.

The flags are shortcuts for keys of the eval config tree (EvalConfig): `--config FILE`
takes the same keys from YAML and `key=value` overrides any of them, e.g.
`env.sandbox.mem_limit=4g`. `--print-config` shows the resolved tree.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from agent_rl.cli.recipe_args import add_config_arguments, resolve_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="pass@k evaluation: n agent samples per task, graded in sandboxes (resumable)",
        description="Run the agent n times on every task, grade each sample in a fresh container, and "
        "write DIR/results.jsonl (one line per sample), DIR/report.json, DIR/report.md and "
        "DIR/pass_at_k.png. Re-running with the same DIR skips finished samples.",
    )
    add_config_arguments(p)
    p.add_argument("--model", help="[model] model alias (smollm2-135m), HF checkpoint dir, or served model name")
    p.add_argument("--tasks", help="[tasks] task spec: builtin, builtin:easy, tasks.jsonl, …")
    p.add_argument("--samples", "-n", type=int, help="[samples] samples per task (n; default 1)")
    p.add_argument("--k", default=None, help="[ks] comma-separated k values ≤ n (default: powers of two up to n)")
    p.add_argument("--workers", type=int, help="[workers] episodes in flight at once (default 2)")
    p.add_argument("--out", help="[out] output directory (re-use it to resume)")
    p.add_argument("--engine", choices=("hf", "openai", "vllm"), help="[engine.kind] inference engine (default hf)")
    p.add_argument("--base-url", default=None, help="[engine.base_url] server URL for --engine openai (e.g. http://127.0.0.1:8000)")
    p.add_argument("--engine-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="[engine.KEY] extra engine key (repeatable), e.g. device=cuda, or tokenizer=smollm2-135m with --engine openai")
    p.add_argument("--max-turns", type=int, default=None, help="[agent.max_turns, env.max_turns] turn limit")
    p.add_argument("--max-tokens-per-turn", type=int, default=None, help="[agent.max_tokens_per_turn] tokens the model may sample per turn")
    p.add_argument("--max-total-tokens", type=int, default=None, help="[agent.max_total_tokens] context budget per episode")
    p.add_argument("--temperature", type=float, default=None, help="[agent.sampling.temperature] sampling temperature (default 1.0)")
    p.add_argument("--seed", type=int, default=None, help="[seed] base seed; each (task, sample) derives its own")
    p.add_argument("--retry-errors", action="store_true", default=None, help="[retry_errors] re-run samples whose earlier attempt errored")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _shortcuts(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as dotted keys of the eval tree (None: not given)."""
    from agent_rl.eval.passk import parse_ks
    from agent_rl.recipes import parse_override

    shortcuts: dict[str, Any] = {
        "model": args.model, "tasks": args.tasks, "out": args.out, "samples": args.samples,
        "ks": parse_ks(args.k) if args.k else None, "workers": args.workers, "seed": args.seed,
        "retry_errors": args.retry_errors, "engine.kind": args.engine, "engine.base_url": args.base_url,
        "agent.max_turns": args.max_turns, "env.max_turns": args.max_turns,
        "agent.max_tokens_per_turn": args.max_tokens_per_turn, "agent.max_total_tokens": args.max_total_tokens,
        "agent.sampling.temperature": args.temperature,
    }
    for item in args.engine_opt:
        key, value = parse_override(item)
        shortcuts[f"engine.{key}"] = value  # numbers and booleans, like YAML configs
    return shortcuts


def run(args: argparse.Namespace) -> int:
    import asyncio

    from agent_rl.engines.base import EngineError
    from agent_rl.eval.evaluate import EvalConfig, run_eval
    from agent_rl.eval.reports import render_eval_markdown

    try:
        config = resolve_config(EvalConfig, args, _shortcuts(args), "eval")
        if isinstance(config, int):
            return config
        asyncio.run(_check_server(config.engine))
        report = asyncio.run(run_eval(config, progress=not args.no_progress))
    except ValueError as exc:  # bad flags, bad task spec
        print(f"eval: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:  # the server cannot serve this run (before any sample started)
        print(f"eval: {exc}", file=sys.stderr)
        return 2
    print(render_eval_markdown(report))
    import os

    drawn = ", pass_at_k.png" if os.path.exists(os.path.join(config.out, "pass_at_k.png")) else ""
    print(f"wrote {config.out}/results.jsonl, report.json, report.md{drawn}")
    if report.get("all_errored"):
        print(f"eval: {report['all_errored']}", file=sys.stderr)
        return 1
    return 0


async def _check_server(engine_config: Any) -> None:
    """`--engine openai` in token mode with `engine.server: auto`: ask the server what it is
    before any sandbox starts, so one that cannot take token ids stops the run at once
    (naming mode=text) instead of failing every sample."""
    if engine_config.kind != "openai" or engine_config.mode != "tokens" or engine_config.server != "auto":
        return
    from agent_rl.engines.factory import make_engine

    engine = make_engine(engine_config)
    try:
        await engine.connect()  # type: ignore[attr-defined]
    finally:
        await engine.close()

"""`agent-rl rollout`: play G episodes per task and write the trajectories.

    agent-rl rollout --model smollm2-135m --tasks builtin:easy --group-size 2 --out runs/r1
    agent-rl rollout --config my.yaml tasks=builtin:easy out=runs/r1 agent.sampling.temperature=0.7

The flags are shortcuts for keys of the rollout config tree; `--config FILE` takes the same
keys from YAML, `key=value` overrides any of them, `--print-config` shows the resolved tree.

Writes DIR/trajectories.jsonl (every episode, errors included), DIR/sft.jsonl (resolved
episodes only, chat format, for rejection fine-tuning) and DIR/summary.json, and prints a
summary table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_rl.cli.recipe_args import add_config_arguments, resolve_config
from agent_rl.engines.models import DEFAULT_MODEL

if TYPE_CHECKING:
    from agent_rl.rollout.run_config import RolloutRunConfig


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "rollout",
        help="play G episodes per task and write trajectories",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.add_argument("--model", default=None, help=f"[model] model alias or local HF checkpoint (default: {DEFAULT_MODEL})")
    p.add_argument("--tasks", help="[tasks] task spec: builtin, builtin:easy, builtin:<suite>[:<difficulty>], or a .jsonl file")
    p.add_argument("--limit", type=int, default=None, help="[limit] use only the first N tasks")
    p.add_argument("--group-size", type=int, default=None, help="[rollout.group_size] episodes per task (G, default 1)")
    p.add_argument("--concurrency", type=int, default=None, help="[rollout.concurrency] episodes in flight (default 4)")
    p.add_argument("--max-turns", type=int, default=None, help="[agent.max_turns, env.max_turns] turn limit (agent and env)")
    p.add_argument("--max-tokens-per-turn", type=int, default=None, help="[agent.max_tokens_per_turn]")
    p.add_argument("--max-total-tokens", type=int, default=None, help="[agent.max_total_tokens] context budget per episode")
    p.add_argument("--temperature", type=float, default=None, help="[agent.sampling.temperature]")
    p.add_argument("--seed", type=int, default=None, help="[seed] episode i samples with seed+i")
    p.add_argument("--engine", choices=("hf", "openai"), default=None, help="[engine.kind] hf: in-process (default); openai: an OpenAI-compatible server")
    p.add_argument("--base-url", default=None, help="[engine.base_url] server URL for --engine openai (e.g. http://127.0.0.1:8000)")
    p.add_argument("--device", default=None, help="[engine.device] device for --engine hf (cpu, cuda, auto; default cpu)")
    p.add_argument("--out", help="[out] output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _shortcuts(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as dotted keys of the rollout tree (None: not given)."""
    return {
        "model": args.model, "tasks": args.tasks, "limit": args.limit, "out": args.out, "seed": args.seed,
        "rollout.group_size": args.group_size, "rollout.concurrency": args.concurrency,
        "agent.max_turns": args.max_turns, "env.max_turns": args.max_turns,  # the env's instructions quote it
        "agent.max_tokens_per_turn": args.max_tokens_per_turn, "agent.max_total_tokens": args.max_total_tokens,
        "agent.sampling.temperature": args.temperature,
        "engine.kind": args.engine, "engine.base_url": args.base_url, "engine.device": args.device,
    }


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from agent_rl.rollout.chat_template import TemplateDriftError
    from agent_rl.engines.models import ModelNotFoundError
    from agent_rl.rollout.run_config import RolloutRunConfig
    from envs.tasks import TaskError
    from strictconfig import ConfigError

    config = resolve_config(RolloutRunConfig, args, _shortcuts(args), "rollout")
    if isinstance(config, int):
        return config
    try:
        tasks = _prepare(config)
        tokenizer, engine = _load(config)
    except (ConfigError, TaskError, ModelNotFoundError, TemplateDriftError, OSError) as exc:
        print(f"agent-rl rollout: error: {exc}", file=sys.stderr)
        return 2

    from agent_rl.rollout.runner import collect

    async def go() -> list[Any]:
        try:
            return await collect(
                tasks,
                engine,
                tokenizer,
                group_size=config.rollout.group_size,
                concurrency=config.rollout.concurrency,
                env_config=config.env,
                agent_config=config.agent,
                progress=not args.no_progress,
                seed=config.seed,
                rollout=config.rollout,  # the episode and step deadlines
            )
        finally:
            await engine.close()

    started = time.monotonic()
    try:
        trajectories = asyncio.run(go())
    except (ConfigError, TemplateDriftError) as exc:  # raised up front, before any episode
        print(f"agent-rl rollout: error: {exc}", file=sys.stderr)
        return 2
    _write_outputs(config, tasks, trajectories, time.monotonic() - started)
    from agent_rl.eval.evaluate import all_errored_summary

    summary = all_errored_summary([t.error for t in trajectories], what="episode")
    if summary:
        print(f"agent-rl rollout: {summary}", file=sys.stderr)
        return 1
    return 0


def _prepare(config: RolloutRunConfig) -> list[Any]:
    """The tasks to play; a broken prompt template fails here, not in every episode."""
    from envs.tasks import TaskError, load_tasks

    config.agent.templates()
    tasks = load_tasks(config.tasks)
    if config.limit is not None:
        tasks = tasks[: config.limit]
    if not tasks:
        raise TaskError(f"no tasks in {config.tasks!r}")
    return tasks


def _load(config: RolloutRunConfig) -> tuple[Any, Any]:
    from agent_rl.engines.factory import make_engine
    from agent_rl.engines.models import load_tokenizer

    tokenizer = load_tokenizer(config.engine.tokenizer or config.model)
    return tokenizer, make_engine(config.engine, tokenizer=tokenizer)


def _write_outputs(config: RolloutRunConfig, tasks: list[Any], trajectories: list[Any], elapsed: float) -> None:
    from agent_rl.rollout.runner import summarize
    from agent_rl.rollout.trajectory import write_jsonl, write_sft_jsonl

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(trajectories, str(out / "trajectories.jsonl"))
    n_sft = write_sft_jsonl(trajectories, str(out / "sft.jsonl"))
    summary = summarize(trajectories)
    sampled = sum(t.num_sampled_tokens for t in trajectories)
    summary.update(
        {
            "model": config.model,
            "tasks": config.tasks,
            "num_tasks": len(tasks),
            "group_size": config.rollout.group_size,
            "concurrency": config.rollout.concurrency,
            "sft_records": n_sft,
            "wall_s": round(elapsed, 3),
            "sampled_tokens": sampled,
            "sampled_tokens_per_s": round(sampled / elapsed, 3) if elapsed > 0 else None,
        }
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    _print_summary(summary, out)


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"rollout → {out}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("episodes", summary["episodes"]),
        ("errors", summary["errors"]),
        ("solved", summary["solved"]),
        ("solve rate", f"{summary['solve_rate']:.3f}"),
        ("mean reward", f"{summary['mean_reward']:.3f}"),
        ("mean turns", f"{summary['mean_turns']:.2f}"),
        ("mean sampled tokens", f"{summary['mean_sampled_tokens']:.1f}"),
        ("finish reasons", ", ".join(f"{k}={v}" for k, v in sorted(summary["finish_reasons"].items()))),
        ("SFT records", summary["sft_records"]),
        ("wall time (s)", f"{summary['wall_s']:.1f}"),
        ("sampled tokens/s", summary["sampled_tokens_per_s"]),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console = Console()
    console.print(table)
    for message in summary["error_messages"][:5]:
        console.print(f"[red]error[/red] {message}")

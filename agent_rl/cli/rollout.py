"""`agent-rl rollout`: play G episodes per task and write the trajectories.

    agent-rl rollout --model smollm2-135m --tasks builtin:easy --group-size 2 --out runs/r1

Writes DIR/trajectories.jsonl (every episode, errors included), DIR/sft.jsonl (resolved
episodes only, chat format, for rejection fine-tuning) and DIR/summary.json, and prints a
summary table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from agent_rl.engines.models import DEFAULT_MODEL


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "rollout",
        help="play G episodes per task and write trajectories",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help="model alias or local HF checkpoint (default: %(default)s)")
    p.add_argument("--tasks", required=True, help="task spec: builtin, builtin:easy, builtin:<suite>[:<difficulty>], or a .jsonl file")
    p.add_argument("--limit", type=int, default=None, help="use only the first N tasks")
    p.add_argument("--group-size", type=int, default=1, help="episodes per task (G)")
    p.add_argument("--concurrency", type=int, default=4, help="episodes in flight")
    p.add_argument("--max-turns", type=int, default=None, help="turn limit (agent and env)")
    p.add_argument("--max-tokens-per-turn", type=int, default=None)
    p.add_argument("--max-total-tokens", type=int, default=None, help="context budget per episode")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="episode i samples with seed+i")
    p.add_argument("--engine", choices=("hf", "openai"), default="hf", help="hf: in-process; openai: an OpenAI-compatible server")
    p.add_argument("--base-url", default=None, help="server URL for --engine openai (e.g. http://127.0.0.1:8000)")
    p.add_argument("--device", default="cpu", help="device for --engine hf (cpu, cuda, auto)")
    p.add_argument("--config", default=None, help="YAML with optional 'agent' and 'env' sections (strict keys)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _load_sections(path: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    from sandboxes.strict import ConfigError

    if not path:
        return {}, {}
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'agent' and/or 'env'")
    unknown = set(data) - {"agent", "env"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; valid: agent, env")
    return dict(data.get("agent") or {}), dict(data.get("env") or {})


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from agent_rl.rollout.chat_template import TemplateDriftError
    from agent_rl.engines.models import ModelNotFoundError
    from envs.tasks import TaskError
    from sandboxes.strict import ConfigError

    try:
        agent_config, env_config, tasks = _prepare(args)
        tokenizer, engine = _load(args)
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
                group_size=args.group_size,
                concurrency=args.concurrency,
                env_config=env_config,
                agent_config=agent_config,
                progress=not args.no_progress,
                seed=args.seed,
            )
        finally:
            await engine.close()

    started = time.monotonic()
    try:
        trajectories = asyncio.run(go())
    except (ConfigError, TemplateDriftError) as exc:  # raised up front, before any episode
        print(f"agent-rl rollout: error: {exc}", file=sys.stderr)
        return 2
    _write_outputs(args, tasks, trajectories, time.monotonic() - started)
    return 0


def _prepare(args: argparse.Namespace) -> tuple[Any, Any, list[Any]]:
    """Agent config, env config and tasks from the flags and the optional YAML."""
    from agent_rl.rollout.agent import AgentConfig
    from agent_rl.rollout.runner import RolloutConfig
    from envs.swe_env import EnvConfig
    from envs.tasks import TaskError, load_tasks
    from sandboxes.strict import from_mapping, set_dotted

    RolloutConfig(group_size=args.group_size, concurrency=args.concurrency)  # validates both
    agent_data, env_data = _load_sections(args.config)
    for flag, dotted in (
        ("max_turns", "max_turns"),
        ("max_tokens_per_turn", "max_tokens_per_turn"),
        ("max_total_tokens", "max_total_tokens"),
        ("temperature", "sampling.temperature"),
    ):
        if getattr(args, flag) is not None:
            set_dotted(agent_data, dotted, getattr(args, flag))
    if args.max_turns is not None:
        env_data["max_turns"] = args.max_turns  # the env's instructions quote this limit
    agent_config = from_mapping(AgentConfig, agent_data, "agent")
    agent_config.templates()  # a broken prompt template fails here, not in every episode
    env_config = from_mapping(EnvConfig, env_data, "env")
    tasks = load_tasks(args.tasks)
    if args.limit is not None:
        tasks = tasks[: args.limit]
    if not tasks:
        raise TaskError(f"no tasks in {args.tasks!r}")
    return agent_config, env_config, tasks


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from agent_rl.engines.factory import make_engine
    from agent_rl.engines.models import load_tokenizer

    spec: dict[str, Any] = {"kind": args.engine, "model": args.model}
    if args.engine == "openai":
        spec["base_url"] = args.base_url
    else:
        spec["device"] = args.device
    tokenizer = load_tokenizer(args.model)
    return tokenizer, make_engine(spec, tokenizer=tokenizer)


def _write_outputs(args: argparse.Namespace, tasks: list[Any], trajectories: list[Any], elapsed: float) -> None:
    from agent_rl.rollout.runner import summarize
    from agent_rl.rollout.trajectory import write_jsonl, write_sft_jsonl

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(trajectories, str(out / "trajectories.jsonl"))
    n_sft = write_sft_jsonl(trajectories, str(out / "sft.jsonl"))
    summary = summarize(trajectories)
    sampled = sum(t.num_sampled_tokens for t in trajectories)
    summary.update(
        {
            "model": args.model,
            "tasks": args.tasks,
            "num_tasks": len(tasks),
            "group_size": args.group_size,
            "concurrency": args.concurrency,
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

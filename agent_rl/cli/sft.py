"""`agent-rl sft --config FILE [key=value ...]`: supervised fine-tuning on trajectories.

Learns from our trajectories.jsonl (token-exact, loss where loss_mask is 1) and/or OpenAI
chat-messages JSONL (loss on assistant turns). `--data FILE` (repeatable) sets data.paths,
`--resolved-only` keeps successes only (rejection fine-tuning). `--resume` continues from the
latest checkpoint (or `--resume PATH`). `--print-config` / `--print-schema` as for `train`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from agent_rl.cli.recipe_args import add_config_arguments, resolve_config


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sft",
        help="supervised fine-tuning on trajectories or chat messages",
        description="Supervised fine-tuning. Example: agent-rl sft --data runs/rollout/trajectories.jsonl "
                    "--resolved-only max_steps=50",
    )
    add_config_arguments(parser)
    parser.add_argument("--data", action="append", metavar="FILE", help="JSONL to learn from (repeatable; data.paths)")
    parser.add_argument("--resolved-only", action="store_true", default=None,
                        help="keep resolved episodes only (data.only_resolved)")
    parser.add_argument(
        "--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
        help="continue from the latest checkpoint (or the given checkpoint directory)",
    )
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from agent_rl.train.sft_config import SFTConfig

    shortcuts = {"data.paths": args.data, "data.only_resolved": args.resolved_only}
    config = resolve_config(SFTConfig, args, shortcuts, "sft")
    if isinstance(config, int):
        return config

    from agent_rl.rollout.chat_template import TemplateDriftError
    from agent_rl.train.sft import SFTTrainer
    from agent_rl.train.sft_data import SFTDataError

    def on_step(step: int, row: dict[str, Any]) -> None:
        if config.logging.progress:
            print(f"step {step}/{config.max_steps}: loss {row['loss']:.4f} grad_norm {row['grad_norm']:.3f} "
                  f"tokens {row['loss_tokens']} padding {row['padding_fraction']:.0%}", flush=True)

    try:
        trainer = SFTTrainer(config, resume=args.resume, on_step=on_step)
    except (SFTDataError, TemplateDriftError, ValueError) as exc:
        print(f"agent-rl sft: {exc}", file=sys.stderr)
        return 2
    stats = trainer.data_stats
    print(f"sft data: {stats.kept} rows kept of {stats.lines} lines ({stats.unresolved} unresolved, "
          f"{stats.unusable} unusable, {stats.too_long} too long); starting at step {trainer.step}", flush=True)
    history = trainer.train()
    final = history[-1] if history else {}
    print(f"done: {trainer.step} steps, final loss {final.get('loss', float('nan')):.4f}, metrics in "
          f"{config.output_dir}/metrics.jsonl, curves in {config.output_dir}/training_curves.png")
    return 0

"""`agent-rl train --config configs/X.yaml [key=value ...]`: DAPO training.

Prints the resolved config, validates it (unknown keys and impossible batch geometry are
errors naming the key), then trains with a progress bar showing the live reward.
`--print-config` prints the resolved tree as YAML and `--print-schema` its JSON Schema.
`--resume` continues from the latest checkpoint in the run's checkpoint directory (or from
`--resume PATH`); `--export CKPT OUT` writes a copy of a checkpoint without optimizer state.

Several ranks: `torchrun --nproc-per-node N -m agent_rl.cli train --config ...` (FSDP2; see
agent_rl/train/distributed), or `cluster: {kind: ray, trainer_ranks: N}`, which places the N
ranks on a Ray cluster (agent_rl/train/ray_ranks.py). Only rank 0 prints.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from agent_rl.cli.recipe_args import add_config_arguments, resolve_config


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train an agent with DAPO",
        description="Train an agent with DAPO. Example: agent-rl train --config configs/smoke-cpu.yaml max_steps=2",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
        help="continue from the latest checkpoint (or the given checkpoint directory)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print and validate the config, then stop")
    parser.add_argument("--export", nargs=2, metavar=("CHECKPOINT", "OUT"), help="copy a checkpoint without optimizer state")
    parser.set_defaults(func=handle)


def _print_config(config: Any) -> None:
    from agent_rl.recipes import dump_yaml

    print("# resolved training config")
    print(dump_yaml(config).rstrip())
    print(f"# rollout batch: {config.rollout.tasks_per_step} tasks × {config.rollout.group_size} samples "
          f"= {config.batch_size} trajectories; {config.batch_size // config.algorithm.mini_batch_size} "
          f"optimizer step(s) per epoch × {config.algorithm.ppo_epochs} epoch(s)")
    sys.stdout.flush()


def _dry_run(config: Any) -> int:
    """Validate the placement (ranks × GPU memory against the model's training state) too."""
    from agent_rl.engines.models import ModelNotFoundError
    from agent_rl.train.placement import PlacementError, check_placement

    try:
        report = check_placement(config)
    except PlacementError as exc:
        print(f"placement does not fit: {exc}", file=sys.stderr)
        return 2
    except (ModelNotFoundError, OSError) as exc:
        print(f"cannot size the placement: {exc}; set placement.model_params_b", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    print("config is valid")
    return 0


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def handle(args: argparse.Namespace) -> int:
    if args.export:
        from agent_rl.train.checkpoint import export_checkpoint

        print(f"exported to {export_checkpoint(*args.export)}")
        return 0
    from agent_rl.train.config import TrainConfig

    config = resolve_config(TrainConfig, args, {}, "train")
    if isinstance(config, int):
        return config
    follower = int(os.environ.get("RANK", "0")) > 0  # torchrun: ranks other than 0 stay quiet
    if not follower:
        _print_config(config)
    if args.dry_run:
        return 0 if follower else _dry_run(config)
    if follower:
        from agent_rl.train.trainer import Trainer

        Trainer(config, resume=args.resume).train()
        return 0
    if config.cluster.trainer_ranks > 1 and "RANK" not in os.environ:
        from agent_rl.train.ray_ranks import train_on_ray

        history = train_on_ray(config, resume=args.resume)
        _print_done(config, history)
        return 0

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agent_rl.engines.capabilities import EngineCapabilityError
    from agent_rl.train.trainer import Trainer

    columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}"))
    with Progress(*columns, disable=not config.logging.progress, transient=False) as progress:
        bar = progress.add_task("starting", total=config.max_steps)

        def on_step(step: int, row: dict[str, Any]) -> None:
            progress.update(
                bar, completed=step,
                description=f"reward {_fmt(row.get('reward_mean'))} solve {_fmt(row.get('solve_rate'), '.0%')} "
                            f"entropy {_fmt(row.get('entropy'), '.2f')} step {_fmt(row.get('step_time_s'), '.0f')}s",
            )
            if not config.logging.progress:  # still leave a trace in logs
                print(f"step {step}: reward {_fmt(row.get('reward_mean'))} solve {_fmt(row.get('solve_rate'))}", flush=True)

        try:
            trainer = Trainer(config, resume=args.resume, on_step=on_step)
        except EngineCapabilityError as exc:  # e.g. a text-mode server: nothing it samples can train
            print(f"cannot train: {exc}", file=sys.stderr)
            return 2
        progress.update(bar, completed=trainer.step, description=f"resumed at step {trainer.step}" if trainer.step else "rolling out")
        history = trainer.train()
    _print_done(config, history)
    return 0


def _print_done(config: Any, history: list[dict[str, Any]]) -> None:
    final = history[-1] if history else {}
    print(f"done: {len(history)} steps, final reward {_fmt(final.get('reward_mean'))}, "
          f"metrics in {config.output_dir}/metrics.jsonl, curves in {config.output_dir}/training_curves.png")

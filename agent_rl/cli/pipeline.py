"""`agent-rl pipeline --config FILE [key=value ...]`: demonstrations → SFT → DAPO, evaluated
after every stage, ending with the before/after solve rates (agent_rl/train/pipeline.py).

Overrides address the stages' own trees: `sft.max_steps=4`, `train.optim.lr=2e-5`,
`eval.heldout=builtin:floor:heldout`. `--print-config` / `--print-schema` as for `train`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from agent_rl.cli.recipe_args import add_config_arguments, resolve_config


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="demos → SFT → DAPO with an eval after each stage (the main job)",
        description="Demonstrations, SFT and DAPO in one run, with before/after solve rates. "
                    "Example: agent-rl pipeline --config configs/learn-cpu.yaml",
    )
    add_config_arguments(parser)
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from agent_rl.train.pipeline import PipelineConfig

    config = resolve_config(PipelineConfig, args, {}, "pipeline")
    if isinstance(config, int):
        return config

    from agent_rl.engines.capabilities import EngineCapabilityError
    from agent_rl.train.pipeline import Pipeline, before_after_lines
    from envs.tasks import TaskError

    try:
        summary = Pipeline(config, say=lambda line: print(line, flush=True)).run()
    except (TaskError, EngineCapabilityError, ValueError, RuntimeError) as exc:
        print(f"agent-rl pipeline: {exc}", file=sys.stderr)
        return 1
    print(f"summary: {config.output_dir}/summary.json; RL curves: {summary['rl_curves_png']}")
    for line in before_after_lines(summary):
        print(line)
    return 0

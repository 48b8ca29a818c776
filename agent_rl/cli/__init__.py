"""`agent-rl` entry point.

Each subcommand lives in `agent_rl/cli/<name>.py` and exposes `register(subparsers)`.
Command modules import their heavy dependencies (torch, docker) inside their handlers, so
`agent-rl --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order is the order shown in --help.
COMMAND_MODULES = (
    "doctor",
    "images",
    "sandbox",
    "tasks",
    "serve",
    "gateway",
    "rollout",
    "demos",
    "sft",
    "train",
    "pipeline",
    "eval",
    "grade",
    "compare",
    "analyze",
    "synth",
    "view",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-rl",
        description="Train and evaluate LLM software-engineering agents with RL.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        # A command that fails to import means a broken install: the error surfaces, the command is never hidden.
        module = importlib.import_module(f"agent_rl.cli.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


"""The config arguments `train`, `eval` and `rollout` share.

Each of them takes `--config FILE key=value ...`; its other flags are shortcuts for dotted
keys of the same tree. `--print-config` prints the resolved tree as YAML (a valid recipe)
and `--print-schema` prints the tree's JSON Schema (for editors validating recipes); both
exit without running anything.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Mapping, TypeVar

if TYPE_CHECKING:  # pydantic is imported when a command runs, not for `agent-rl --help`
    from strictconfig import StrictModel

M = TypeVar("M", bound="StrictModel")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML recipe (any subset of the config tree)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides parsed as YAML, e.g. agent.sampling.temperature=0.7 (win over flags)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("--print-schema", action="store_true", help="print the config's JSON Schema and exit")


def resolve_config(
    model: type[M], args: argparse.Namespace, shortcuts: Mapping[str, Any], command: str
) -> M | int:
    """The validated tree, or an exit code: 0 after --print-config/--print-schema, 2 (message
    on stderr) when the config is invalid."""
    from agent_rl.recipes import dump_yaml, json_schema, load_config
    from strictconfig import ConfigError

    if args.print_schema:
        print(json.dumps(json_schema(model), indent=2))
        return 0
    try:
        config = load_config(model, args.config, args.overrides, shortcuts=shortcuts)
    except ConfigError as exc:
        print(f"agent-rl {command}: invalid config: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(dump_yaml(config))
        return 0
    return config

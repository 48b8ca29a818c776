"""Recipes: a YAML file plus dotted `key=value` overrides, validated into one config tree.

`agent-rl train`, `eval` and `rollout` all read their config this way:

    load_config(TrainConfig, "configs/smoke-cpu.yaml", ["algorithm.kl_beta=0.01"])

reads the YAML, applies the command's flag shortcuts and then the overrides (so an override
on the command line wins over both), and validates the result as the command's config model
once. Errors are `ConfigError`s naming the dotted path of each bad key.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from strictconfig import ConfigError, StrictModel

M = TypeVar("M", bound=StrictModel)


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.1's float pattern needs a dot, so PyYAML reads `1e-5` as the string "1e-5" and
    `lr: 1e-5` fails validation as "not a number". Recipes read it as the float anyone means."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` → ("a.b", value), with the value parsed as YAML (so 3, true, null, [1,2] work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. algorithm.kl_beta=0.01)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        return key, _yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML: {exc}") from exc


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating the sections on the way."""
    keys = dotted.split(".")
    node = data
    for i, key in enumerate(keys[:-1]):
        nxt = node.setdefault(key, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted}: '{'.'.join(keys[: i + 1])}' is not a section")
        node = nxt
    node[keys[-1]] = value


def read_recipe(path: str | Path) -> dict[str, Any]:
    """A YAML recipe's top-level mapping (an empty file is an empty mapping)."""
    try:
        loaded = _yaml(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if loaded is not None and not isinstance(loaded, Mapping):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return dict(loaded or {})


def load_config(
    model: type[M],
    path: str | Path | None,
    overrides: Sequence[str] = (),
    *,
    shortcuts: Mapping[str, Any] | None = None,
) -> M:
    """Recipe file, then `shortcuts` (dotted key → value, from a command's flags; None values
    are skipped), then `overrides`, validated as `model`."""
    data = read_recipe(path) if path is not None else {}
    for key, value in (shortcuts or {}).items():
        if value is not None:
            set_dotted(data, key, value)
    for text in overrides:
        set_dotted(data, *parse_override(text))
    return model.from_config(data, where="")


def dump_yaml(config: StrictModel) -> str:
    """The resolved tree as YAML, in field order, loadable again by `load_config`."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).rstrip() + "\n"


def json_schema(model: type[StrictModel]) -> dict[str, Any]:
    """JSON Schema of a config tree (for editors validating recipes)."""
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema

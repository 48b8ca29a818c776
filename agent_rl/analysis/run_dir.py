"""Where things are in a run directory, and the weights a checkpoint spec names.

A run directory is a `train` output_dir (config.yaml, metrics.jsonl, checkpoints/) or a
`pipeline` output_dir, whose RL stage is its `rl/` folder and whose evals sit beside it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent_rl.analysis.weights import Endpoint, WeightsError, full_endpoint, lora_endpoint


@dataclass
class RunDir:
    root: Path  # what the user named
    training: Path  # the folder with metrics.jsonl / config.yaml / checkpoints
    config: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such run directory")
        training = root
        if not (root / "metrics.jsonl").is_file() and (root / "rl" / "metrics.jsonl").is_file():
            training = root / "rl"  # an `agent-rl pipeline` directory
        config_path = training / "config.yaml"
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        return cls(root, training, config or {})

    # ------------------------------------------------------------------ metrics
    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl rows by step (a step logged twice keeps its last row)."""
        path = self.training / "metrics.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{self.training}: no metrics.jsonl")
        rows: dict[int, dict[str, Any]] = {}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows[row["step"]] = row
        return [rows[s] for s in sorted(rows)]

    # ------------------------------------------------------------------ checkpoints
    @property
    def base_model(self) -> str:
        name = (self.config.get("model") or {}).get("name")
        if not name:
            raise WeightsError(f"{self.training}/config.yaml names no model.name: pass --against explicitly")
        return str(name)

    @property
    def checkpoint_dir(self) -> Path:
        configured = (self.config.get("checkpoint") or {}).get("dir")
        return Path(configured) if configured else self.training / "checkpoints"

    def latest_checkpoint(self) -> Path:
        from agent_rl.train.checkpoint import CheckpointManager

        latest = CheckpointManager(self.checkpoint_dir).latest()
        if latest is None:
            raise FileNotFoundError(f"no complete checkpoint under {self.checkpoint_dir}")
        return latest

    def base_dir(self) -> Path:
        from agent_rl.engines.models import resolve_checkpoint

        return resolve_checkpoint(self.base_model)

    def endpoint(self, spec: str | None) -> Endpoint:
        """None or "base": the run's base model; "last": its latest checkpoint; a number: that
        step's checkpoint; a path: a step directory, an HF folder or a LoRA adapter; else a
        model alias."""
        if spec is None or spec == "base":
            return full_endpoint(f"base ({self.base_model})", self.base_dir())
        if spec == "last":
            return self._path_endpoint(self.latest_checkpoint())
        if spec.isdigit():
            path = self.checkpoint_dir / f"step-{int(spec):06d}"
            if not path.is_dir():
                raise FileNotFoundError(f"no checkpoint for step {spec}: {path} does not exist")
            return self._path_endpoint(path)
        path = Path(spec)
        if path.exists():
            return self._path_endpoint(path)
        from agent_rl.engines.models import resolve_checkpoint

        return full_endpoint(spec, resolve_checkpoint(spec))

    def _path_endpoint(self, path: Path) -> Endpoint:
        label = path.name if path.name not in ("model", "adapter") else f"{path.parent.name}/{path.name}"
        if (path / "adapter" / "adapter_config.json").is_file():
            return lora_endpoint(label, path / "adapter", self.base_dir())
        if (path / "adapter_config.json").is_file():
            return lora_endpoint(label, path, self.base_dir())
        if (path / "model" / "config.json").is_file():
            return full_endpoint(label, path / "model")
        if (path / "config.json").is_file():
            return full_endpoint(label, path)
        raise WeightsError(f"{path}: neither a checkpoint (model/ or adapter/), an HF folder nor a LoRA adapter")

"""The weights at the two ends of an update, read one tensor at a time.

An *endpoint* is a set of weights: the run's base model (an alias or HF folder, see
agent_rl.engines.models), a full checkpoint (`step-N/model/`, or any HF folder), or a LoRA
checkpoint (`step-N/adapter/`), which is the base plus, per target matrix, the merged delta
ΔW = scale · B @ A (scale = alpha / r, or alpha / √r with rsLoRA). For LoRA the delta comes
from the adapter itself rather than from the merged `model/`, so its rank is exact instead of
blurred by rounding the merged weights.

Tensors are read lazily from safetensors files, so two 7B checkpoints never sit in memory
whole; the update of one parameter at a time is all the analysis holds.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch


class WeightsError(ValueError):
    """An endpoint that cannot be read (missing folder, no weights, an unknown adapter layout)."""


class SafetensorsWeights:
    """Parameter name → tensor from the *.safetensors files of an HF folder (or .bin files)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._where: dict[str, Path] = {}
        self._loaded: dict[str, torch.Tensor] | None = None
        files = sorted(self.directory.glob("*.safetensors"))
        if files:
            from safetensors import safe_open

            for path in files:
                with safe_open(str(path), framework="pt") as fh:
                    for key in fh.keys():
                        self._where[key] = path
        else:
            bins = sorted(self.directory.glob("pytorch_model*.bin"))
            if not bins:
                raise WeightsError(f"{self.directory}: no *.safetensors or pytorch_model*.bin weights")
            self._loaded = {}
            for path in bins:
                self._loaded.update(torch.load(path, map_location="cpu", weights_only=True))

    def names(self) -> list[str]:
        return sorted(self._loaded if self._loaded is not None else self._where)

    def get(self, name: str) -> torch.Tensor:
        if self._loaded is not None:
            return self._loaded[name]
        from safetensors import safe_open

        with safe_open(str(self._where[name]), framework="pt") as fh:
            return fh.get_tensor(name)


_PEFT_PREFIX = re.compile(r"^base_model\.model\.")
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")


def lora_deltas(adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    """Target parameter name (e.g. model.layers.0.self_attn.q_proj.weight) → ΔW (float32)."""
    directory = Path(adapter_dir)
    config_path = directory / "adapter_config.json"
    weights_path = directory / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise WeightsError(f"{directory}: not a LoRA adapter (needs adapter_config.json and adapter_model.safetensors)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    from safetensors.torch import load_file

    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(weights_path)).items():
        match = _LORA_KEY.match(_PEFT_PREFIX.sub("", key))
        if match:
            factors.setdefault(match.group("module"), {})[match.group("which")] = tensor.float()
    deltas: dict[str, torch.Tensor] = {}
    for module, ab in factors.items():
        if set(ab) != {"A", "B"}:
            raise WeightsError(f"{directory}: {module} has lora_{''.join(ab)} without its partner")
        rank = ab["A"].shape[0]  # the stored factors' own rank (rank_pattern included)
        alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", rank)))
        scale = alpha / (rank ** 0.5) if config.get("use_rslora") else alpha / rank
        delta = scale * (ab["B"] @ ab["A"])
        deltas[f"{module}.weight"] = delta.T.contiguous() if config.get("fan_in_fan_out") else delta
    if not deltas:
        raise WeightsError(f"{directory}: the adapter holds no lora_A/lora_B weights")
    return deltas


def _pattern_value(patterns: dict[str, object], module: str, default: object) -> object:
    """peft's per-module overrides: a key matches when it is the module name's suffix."""
    for key, value in patterns.items():
        if module == key or module.endswith("." + key) or re.fullmatch(rf"(.*\.)?{key}", module):
            return value
    return default


@dataclass
class Endpoint:
    """One end of an update: full weights, plus LoRA deltas over them when `lora` is set."""

    label: str
    weights: SafetensorsWeights
    lora: dict[str, torch.Tensor] | None = None
    base_dir: Path | None = None  # the folder `weights` reads (identifies a shared base)
    notes: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return self.weights.names()

    def tensor(self, name: str) -> tuple[torch.Tensor, torch.dtype]:
        """The parameter's value and the dtype it is stored in (a LoRA end's value is float32)."""
        base = self.weights.get(name)
        if self.lora is not None and name in self.lora:
            return base.float() + self.lora[name], base.dtype
        return base, base.dtype


def full_endpoint(label: str, directory: str | Path) -> Endpoint:
    directory = Path(directory)
    return Endpoint(label, SafetensorsWeights(directory), base_dir=directory.resolve())


def lora_endpoint(label: str, adapter_dir: str | Path, base_dir: str | Path) -> Endpoint:
    base_dir = Path(base_dir)
    return Endpoint(label, SafetensorsWeights(base_dir), lora=lora_deltas(adapter_dir), base_dir=base_dir.resolve(),
                    notes=[f"LoRA adapter {adapter_dir} merged over {base_dir}"])


@dataclass(frozen=True)
class ParamUpdate:
    name: str
    before: torch.Tensor
    after: torch.Tensor
    delta: torch.Tensor  # float32/64: after − before, exact for LoRA (the adapters' own deltas)
    stored_dtype: torch.dtype  # the coarser of the two ends' storage dtypes


def shared_names(before: Endpoint, after: Endpoint) -> tuple[list[str], list[str]]:
    """(names in both, names in only one): tied embeddings are stored once, so an lm_head may
    be absent on one side."""
    a, b = set(before.names()), set(after.names())
    return sorted(a & b), sorted(a ^ b)


def iter_updates(before: Endpoint, after: Endpoint, names: list[str]) -> Iterator[ParamUpdate]:
    """The update of each named parameter, one at a time."""
    same_base = before.base_dir is not None and before.base_dir == after.base_dir
    for name in names:
        if same_base:
            # Both ends share the base tensors: the update is the difference of their deltas,
            # without the rounding of base + delta.
            base = before.weights.get(name)
            d_before = before.lora.get(name) if before.lora else None
            d_after = after.lora.get(name) if after.lora else None
            if d_before is None and d_after is None:
                yield ParamUpdate(name, base, base, torch.zeros_like(base, dtype=torch.float32), base.dtype)
                continue
            zero = torch.zeros(base.shape, dtype=torch.float32)
            d_before = zero if d_before is None else d_before
            d_after = zero if d_after is None else d_after
            yield ParamUpdate(name, base.float() + d_before, base.float() + d_after, d_after - d_before, base.dtype)
            continue
        (b, b_dtype), (a, a_dtype) = before.tensor(name), after.tensor(name)
        if a.shape != b.shape:
            raise WeightsError(f"{name}: shape {tuple(b.shape)} in {before.label} but {tuple(a.shape)} in {after.label}")
        dtype = a_dtype if torch.finfo(a_dtype).eps >= torch.finfo(b_dtype).eps else b_dtype
        yield ParamUpdate(name, b, a, a.double() - b.double(), dtype)

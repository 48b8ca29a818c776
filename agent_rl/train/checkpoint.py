"""Save and resume everything a training run needs to continue exactly where it stopped.

A checkpoint is a directory `step-000042/`:

    model/              HF format (config.json + safetensors + tokenizer): `from_pretrained`
                        and vLLM load it directly. With LoRA this is the merged model.
    adapter/            LoRA only: the peft adapter, which is what resume loads.
    reference/          only after a reference reset: the reference policy's weights.
    trainer_state.pt    optimizer, scheduler, RNG states, task-sampler position, step,
                        reference marker, metrics history (optimizer/scheduler absent in an
                        export checkpoint).
    sharded/            N-rank training only: every rank's shards of the model and optimizer
                        (torch distributed checkpoint); the optimizer is then here, not in
                        trainer_state.pt (which says so: "optimizer_sharded").
    COMPLETE            written last.

It is written into a temporary sibling directory and renamed into place, so a trainer killed
mid-save leaves a `.tmp` directory that `latest()` ignores, never a half checkpoint.
"""
from __future__ import annotations

import copy
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")
COMPLETE_MARKER = "COMPLETE"
STATE_FILE = "trainer_state.pt"


def capture_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def optimizer_fingerprint(optimizer: torch.optim.Optimizer) -> float:
    """A number that changes with any optimizer state (Adam moments, step counts).

    The trainer logs it once, when it resumes, so a test can check that the restored state is
    exactly what the checkpoint held; it is not computed per step.
    """
    total = 0.0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                if hasattr(value, "to_local"):  # a DTensor: this rank's shard (the trainer sums ranks)
                    value = value.to_local()
                total += float(value.double().abs().sum().item())
    return total


def is_peft_model(model: Any) -> bool:
    return hasattr(model, "peft_config")


@dataclass
class CheckpointContents:
    """What the trainer hands to `save` beyond the model itself."""

    step: int
    trainer_state: dict[str, Any]  # sampler position, metrics history, reference marker, ...
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any | None = None
    reference_state: dict[str, torch.Tensor] | None = None  # None: reference is "initial" or absent
    extra_files: dict[str, str] = field(default_factory=dict)  # name → text (e.g. the resolved config)


@dataclass
class LoadedCheckpoint:
    path: Path
    step: int
    state: dict[str, Any]

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def adapter_dir(self) -> Path | None:
        adapter = self.path / "adapter"
        return adapter if adapter.is_dir() else None

    @property
    def has_optimizer(self) -> bool:
        return "optimizer" in self.state or bool(self.state.get("optimizer_sharded"))

    @property
    def sharded_dir(self) -> Path | None:
        """Where DCP shards live (N-rank runs), else None."""
        return self.path if (self.path / "sharded").is_dir() else None

    def reference_state(self) -> dict[str, torch.Tensor] | None:
        ref = self.path / "reference" / "model.safetensors"
        if not ref.is_file():
            return None
        from safetensors.torch import load_file

        return load_file(str(ref))


def save_hf_state(model: Any, state: dict[str, torch.Tensor], target: Path) -> None:
    """An HF folder from a gathered full state dict and the model's config (sharded training,
    where the model object holds only this rank's shards)."""
    from safetensors.torch import save_file

    target.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(target))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(target))
    # Tied weights share storage, which safetensors refuses; HF re-ties them on load.
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    save_file({k: v.detach().contiguous().clone() for k, v in state.items() if k not in tied},
              str(target / "model.safetensors"), metadata={"format": "pt"})


def _save_model(model: Any, tokenizer: Any, target: Path, state: dict[str, torch.Tensor] | None = None) -> None:
    if state is not None:
        save_hf_state(model, state, target / "model")
    elif is_peft_model(model):
        model.save_pretrained(str(target / "adapter"))
        # vLLM and plain from_pretrained need full weights: merge a copy, leave training untouched.
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(str(target / "model"), safe_serialization=True)
        del merged
    else:
        model.save_pretrained(str(target / "model"), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(target / "model"))


class CheckpointManager:
    def __init__(self, root: str | os.PathLike[str], keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        self.root = Path(root)
        self.keep_last = keep_last

    def step_dirs(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for child in self.root.iterdir():
            match = STEP_DIR.match(child.name)
            if match and (child / COMPLETE_MARKER).is_file():
                found.append((int(match.group(1)), child))
        return sorted(found)

    def latest(self) -> Path | None:
        dirs = self.step_dirs()
        return dirs[-1][1] if dirs else None

    def save(self, model: Any, tokenizer: Any, contents: CheckpointContents) -> Path:
        return self.finish(self.begin(contents.step), model, tokenizer, contents)

    def begin(self, step: int) -> Path:
        """The temporary directory a checkpoint of `step` is written into (other ranks write
        their shards there too, before `finish`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".step-{step:06d}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        return tmp

    def finish(self, tmp: Path, model: Any, tokenizer: Any, contents: CheckpointContents,
               state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write the model (from `state_dict` when given: a gathered sharded model), the trainer
        state and the marker into `tmp`, then rename it into place."""
        final = self.root / f"step-{contents.step:06d}"
        _save_model(model, tokenizer, tmp, state_dict)
        state = dict(contents.trainer_state)
        state["step"] = contents.step
        state["rng"] = capture_rng_state()
        if contents.optimizer is not None:
            state["optimizer"] = contents.optimizer.state_dict()
        if contents.scheduler is not None:
            state["scheduler"] = contents.scheduler.state_dict()
        torch.save(state, tmp / STATE_FILE)
        if contents.reference_state is not None:
            from safetensors.torch import save_file

            (tmp / "reference").mkdir()
            # safetensors refuses shared storage (tied embeddings): store independent copies.
            save_file({k: v.detach().contiguous().clone() for k, v in contents.reference_state.items()},
                      str(tmp / "reference" / "model.safetensors"))
        for name, text in contents.extra_files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        (tmp / COMPLETE_MARKER).write_text(str(contents.step), encoding="utf-8")
        if final.exists():  # re-saving the same step (e.g. final save after a periodic one)
            shutil.rmtree(final)
        os.rename(tmp, final)
        self.prune()
        log.info("checkpoint written: %s", final)
        return final

    def prune(self) -> None:
        dirs = self.step_dirs()
        for _, path in dirs[: max(0, len(dirs) - self.keep_last)]:
            shutil.rmtree(path, ignore_errors=True)
        # Leftovers of saves that were killed midway.
        for child in self.root.glob(".step-*.tmp-*"):
            if not child.name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(child, ignore_errors=True)

    def load(self, path: str | os.PathLike[str] | None = None) -> LoadedCheckpoint:
        """Load `path`, or the latest complete checkpoint under the root."""
        target = Path(path) if path is not None else self.latest()
        if target is None:
            raise FileNotFoundError(f"no complete checkpoint under {self.root}")
        if not (target / COMPLETE_MARKER).is_file():
            raise FileNotFoundError(f"{target} is not a complete checkpoint (no {COMPLETE_MARKER} marker)")
        # Our own file, holding RNG states and optimizer tensors: not loadable with weights_only.
        state = torch.load(target / STATE_FILE, map_location="cpu", weights_only=False)
        return LoadedCheckpoint(path=target, step=int(state["step"]), state=state)


def export_checkpoint(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy a checkpoint without its optimizer/scheduler state (for sharing or serving)."""
    loaded = CheckpointManager(Path(source).parent).load(source)
    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.copytree(loaded.path, tmp, ignore=shutil.ignore_patterns(STATE_FILE))
    state = {k: v for k, v in loaded.state.items() if k not in ("optimizer", "scheduler")}
    torch.save(state, tmp / STATE_FILE)
    os.rename(tmp, target)
    return target


def restore_training_state(loaded: LoadedCheckpoint, optimizer: torch.optim.Optimizer, scheduler: Any,
                           sampler: Any) -> list[dict[str, Any]]:
    """Put a resumable checkpoint's optimizer, scheduler, sampler position and RNG states back
    (what `train` and `sft` both keep); returns its metrics history."""
    state = loaded.state
    if "optimizer" in state:  # else sharded: the trainer loads it from the DCP shards
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if sampler is not None:  # N ranks: only rank 0 samples tasks
        sampler.load_state_dict(state["sampler"])
    restore_rng_state(state["rng"])
    log.info("resumed from %s at step %d", loaded.path, loaded.step)
    return list(state.get("metrics_history", []))

"""Loading the policy to train, shared by `agent-rl train` (DAPO) and `agent-rl sft`.

Both commands load a model the same way (alias or checkpoint, LoRA or full fine-tuning,
optional gradient checkpointing), build the same AdamW + warm-up schedule, seed the same
RNGs and resume from the same checkpoint layout (train/checkpoint.py). Keeping it here means
an SFT checkpoint is a valid starting point for `train` (model.name=<ckpt>/model) and the two
never drift apart.
"""
from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from agent_rl.train.checkpoint import CheckpointManager, LoadedCheckpoint

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the checkpoint's RNG state takes over on resume)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_lambda(warmup: int, total: int, kind: str) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up, then constant, linear or cosine decay."""
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def find_resume_checkpoint(checkpoints: CheckpointManager, resume: bool | str) -> LoadedCheckpoint | None:
    """The checkpoint `--resume` means (True: the latest, a path: that one), or None to start fresh."""
    if not resume:
        return None
    path = None if resume is True else resume
    if path is None and checkpoints.latest() is None:
        log.warning("--resume: no checkpoint under %s yet, starting fresh", checkpoints.root)
        return None
    loaded = checkpoints.load(path)
    if not loaded.has_optimizer:
        raise ValueError(f"{loaded.path} is an export checkpoint without optimizer state: it cannot be resumed")
    return loaded


@dataclass
class Policy:
    """A loaded policy: the (possibly peft-wrapped) model, its tokenizer, device and dtype."""

    model: Any
    tokenizer: Any
    device: str
    dtype: Any

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0


def wrap_lora(model: Any, lora: Any, loaded: LoadedCheckpoint | None) -> Any:
    """Add LoRA adapters per `lora` (a LoraConfig), or reload the checkpoint's trainable adapter."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if loaded is not None and loaded.adapter_dir is not None:
        return PeftModel.from_pretrained(model, str(loaded.adapter_dir), is_trainable=True)
    peft_config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


def load_policy(model_cfg: Any, lora_cfg: Any, loaded: LoadedCheckpoint | None) -> Policy:
    """Load the policy per a ModelConfig and LoraConfig; from `loaded` when resuming.

    Full fine-tuning resumes from the checkpoint's model directory; LoRA reloads the base
    model and the checkpoint's adapter.
    """
    from agent_rl.engines.models import load_model, resolve_device, resolve_dtype

    device = resolve_device(model_cfg.device)
    dtype = resolve_dtype(None if model_cfg.dtype == "auto" else model_cfg.dtype, device)
    source = model_cfg.name
    if loaded is not None and loaded.adapter_dir is None:
        source = str(loaded.model_dir)  # full fine-tuning: the checkpoint is the model
    model, tokenizer = load_model(source, device=device, dtype=dtype)
    if lora_cfg.enabled:
        model = wrap_lora(model, lora_cfg, loaded)
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if lora_cfg.enabled:
            model.enable_input_require_grads()
    return Policy(model=model, tokenizer=tokenizer, device=device, dtype=dtype)


def make_optimizer(model: Any, optim: Any, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters and its LambdaLR schedule, per an OptimConfig."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay, betas=tuple(optim.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(optim.warmup_steps, total_steps, optim.scheduler))
    return optimizer, scheduler


class SteppedRun(Protocol):
    """What `run_to_max_steps` drives: the DAPO Trainer and the SFTTrainer."""

    step: int
    config: Any
    metrics: Any
    output_dir: Any

    def train_step(self) -> dict[str, Any]: ...

    def save_checkpoint(self) -> Any: ...

    def close(self) -> None: ...


def run_to_max_steps(run: SteppedRun, curves: Sequence[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Step `run` to `config.max_steps`, save a final checkpoint unless the last step just did,
    plot training_curves.png (`curves`: the panels; None: the RL ones), close; returns the history."""
    from agent_rl.train.metrics import CURVES, plot_training_curves

    try:
        while run.step < run.config.max_steps:
            run.train_step()
        if run.config.checkpoint.every == 0 or run.step % run.config.checkpoint.every:
            run.save_checkpoint()
        if getattr(run, "is_main", True):  # N ranks: rank 0 holds the metrics
            plot_training_curves(run.metrics.history, Path(run.output_dir) / "training_curves.png", curves or CURVES)
        return run.metrics.history
    finally:
        run.close()

"""Supervised fine-tuning on trajectories: the loop behind `agent-rl sft`.

One step (`SFTTrainer.train_step`):

  1. draw `batch_size` rows        TaskSampler over row indices: seeded epochs, resumable
  2. bucket by length              algo/sft_batch.py: micro-batches within micro_batch_tokens
  3. forward/backward per bucket   algo/logprobs.token_scores on masked positions only,
                                   algo/loss.sft_loss normalised by the step's masked tokens
  4. clip, optimizer and LR step
  5. log and checkpoint            metrics.jsonl, TensorBoard, training_curves.png, exact --resume

Model loading, LoRA, the optimizer and resume lookup are shared with the DAPO trainer
(train/policy.py); checkpoints use the same layout, so `train model.name=<ckpt>/model`
starts RL from an SFT checkpoint.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from agent_rl.algo.logprobs import token_scores
from agent_rl.algo.loss import sft_loss
from agent_rl.algo.sft_batch import SFTExample, length_buckets, pad_examples
from agent_rl.train.checkpoint import CheckpointContents, CheckpointManager, LoadedCheckpoint, restore_training_state
from agent_rl.train.metrics import MetricsLogger
from agent_rl.train.policy import find_resume_checkpoint, load_policy, make_optimizer, run_to_max_steps, seed_everything
from agent_rl.train.sampler import TaskSampler
from agent_rl.train.sft_config import SFTConfig
from agent_rl.train.sft_data import load_sft_examples

log = logging.getLogger(__name__)

SFT_CURVES: tuple[tuple[str, str], ...] = (
    ("loss", "loss (masked cross-entropy)"),
    ("grad_norm", "gradient norm"),
    ("learning_rate", "learning rate"),
    ("padding_fraction", "padding fraction"),
)


def sft_step_loss(model: Any, examples: list[SFTExample], pad_id: int, *, micro_batch_tokens: int,
                  device: str, chunk_size: int = 1024) -> dict[str, Any]:
    """Forward and backward over `examples` in length buckets; gradients accumulate on `model`.

    Returns the step's loss (token-mean over every masked token of `examples`), token counts
    and the padding fraction. The caller zeroes gradients before and steps the optimizer after.
    """
    num_tokens = sum(e.num_loss_tokens for e in examples)
    if num_tokens == 0:
        raise ValueError("no loss tokens in this batch")
    buckets = length_buckets([len(e) for e in examples], micro_batch_tokens)
    total, padded = 0.0, 0
    for bucket in buckets:
        mb = pad_examples([examples[i] for i in bucket], pad_id)
        mask = mb.loss_mask.to(device)
        scores = token_scores(model, mb.input_ids.to(device), mb.attention_mask.to(device), mask,
                              chunk_size=chunk_size)
        loss = sft_loss(scores.logprobs, mask, num_tokens)
        loss.backward()
        total += float(loss.detach())
        padded += mb.input_ids.numel()
    real = sum(len(e) for e in examples)
    return {"loss": total, "loss_tokens": num_tokens, "sequences": len(examples), "micro_batches": len(buckets),
            "padding_fraction": 1.0 - real / padded, "tokens": real}


class SFTTrainer:
    """Supervised fine-tuning of one policy from a validated `SFTConfig`.

    Construction loads the data (errors name file:line), the model (or resumes it: `resume=True`
    takes the latest checkpoint under the run's checkpoint dir, a path takes that one) and the
    optimizer. `train()` runs to `config.max_steps`, checkpoints, plots and closes. Outputs
    under `config.output_dir`: metrics.jsonl, tensorboard/, checkpoints/, training_curves.png,
    config.yaml, data_stats.json.
    """

    def __init__(self, config: SFTConfig, *, resume: bool | str = False,
                 on_step: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        cfg = self.config = config
        self.on_step = on_step
        self.step = 0
        if not cfg.data.paths:
            raise ValueError("data.paths is empty: give the JSONL files to learn from (data.paths=[a.jsonl])")
        self.output_dir = Path(cfg.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        self.checkpoints = CheckpointManager(cfg.checkpoint_dir, cfg.checkpoint.keep_last)
        loaded = find_resume_checkpoint(self.checkpoints, resume)
        self.policy = load_policy(cfg.model, cfg.lora, loaded)
        self.model = self.policy.model
        self.examples, self.data_stats = load_sft_examples(
            cfg.data.paths, self.policy.tokenizer, only_resolved=cfg.data.only_resolved, max_tokens=cfg.data.max_tokens)
        if not self.examples:
            raise ValueError(f"no usable rows in {', '.join(cfg.data.paths)}: {self.data_stats.as_dict()}")
        (self.output_dir / "data_stats.json").write_text(json.dumps(self.data_stats.as_dict()), encoding="utf-8")
        log.info("sft data: %s", self.data_stats.as_dict())
        self.sampler = TaskSampler([str(i) for i in range(len(self.examples))], seed=cfg.seed)
        self.optimizer, self.scheduler = make_optimizer(self.model, cfg.optim, cfg.max_steps)
        history = self._restore(loaded) if loaded is not None else []
        self.metrics = MetricsLogger(self.output_dir, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                                     wandb_project=cfg.logging.wandb_project, run_config=cfg.to_dict(),
                                     history=history)
        (self.output_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
        self._closed = False

    def _restore(self, loaded: LoadedCheckpoint) -> list[dict[str, Any]]:
        self.step = loaded.step
        return restore_training_state(loaded, self.optimizer, self.scheduler, self.sampler)

    def train(self) -> list[dict[str, Any]]:
        """Train to `max_steps`, checkpoint and plot at the end, close; returns the metrics history."""
        return run_to_max_steps(self, SFT_CURVES)

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over `batch_size` rows; returns its metrics row."""
        cfg = self.config
        started = time.monotonic()
        epoch = self.sampler.epoch
        batch = [self.examples[int(i)] for i in self.sampler.take(cfg.batch_size)]
        learning_rate = self.scheduler.get_last_lr()[0]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        row = sft_step_loss(self.model, batch, self.policy.pad_id, micro_batch_tokens=cfg.micro_batch_tokens,
                            device=self.policy.device, chunk_size=cfg.model.logprob_chunk_size)
        params = [p for p in self.model.parameters() if p.requires_grad]
        row["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        self.model.eval()
        self.step += 1
        elapsed = time.monotonic() - started
        row.update(learning_rate=learning_rate, epoch=epoch, step_time_s=elapsed, tokens_per_s=row["tokens"] / elapsed)
        row = self.metrics.log(self.step, row)
        if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0:
            self.save_checkpoint()
        if self.on_step is not None:
            self.on_step(self.step, row)
        return row

    def save_checkpoint(self) -> Path:
        cfg = self.config
        keep = cfg.checkpoint.save_optimizer
        contents = CheckpointContents(
            step=self.step,
            trainer_state={"sampler": self.sampler.state_dict(), "metrics_history": list(self.metrics.history)},
            optimizer=self.optimizer if keep else None,
            scheduler=self.scheduler if keep else None,
            extra_files={"config.yaml": yaml.safe_dump(cfg.to_dict(), sort_keys=False)},
        )
        return self.checkpoints.save(self.model, self.policy.tokenizer, contents)

    def close(self) -> None:
        """Close the metrics logger (idempotent)."""
        if not self._closed:
            self._closed = True
            self.metrics.close()

    def __enter__(self) -> "SFTTrainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

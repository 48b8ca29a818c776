"""`agent-rl sft`'s configuration: one typed tree, loaded like `train`'s (YAML + key=value).

The model, LoRA, optimizer, checkpoint and logging sections are the trainer's own models, so
an SFT recipe reads like a training recipe and its checkpoint can start a DAPO run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from agent_rl.train.config import CheckpointConfig, LoggingConfig, LoraConfig, ModelConfig, OptimConfig
from strictconfig import StrictModel


class SFTDataConfig(StrictModel):
    """What to learn from (formats: agent_rl/train/sft_data.py)."""

    config_where: ClassVar[str] = "data"

    paths: list[str] = Field(default_factory=list)
    """JSONL files: our trajectories.jsonl and/or OpenAI chat-messages records, mixed freely."""
    only_resolved: bool = False
    """Keep resolved episodes only (rejection fine-tuning: rollout → keep successes → sft)."""
    max_tokens: int = Field(4096, ge=2)
    """Rows longer than this (prompt + response tokens) are dropped and counted."""


class SFTConfig(StrictModel):
    """`agent-rl sft`'s whole configuration."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-5))
    data: SFTDataConfig = Field(default_factory=SFTDataConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    batch_size: int = Field(8, ge=1)
    """Sequences per optimizer step (drawn in seeded epochs over the data)."""
    micro_batch_tokens: int = Field(4096, ge=1)
    """Padded tokens (rows × longest row) per forward/backward; rows are grouped by length."""
    seed: int = 0
    """Seeds Python, NumPy, torch and the data order."""
    output_dir: str = "runs/sft"
    """Metrics, curves, the resolved config.yaml and (by default) checkpoints."""
    max_steps: int = Field(100, ge=1)
    """Optimizer steps to train for."""

    @model_validator(mode="after")
    def _fit_together(self) -> "SFTConfig":
        if self.micro_batch_tokens < self.data.max_tokens:
            raise ValueError(f"micro_batch_tokens ({self.micro_batch_tokens}) must be >= data.max_tokens "
                             f"({self.data.max_tokens}): the longest row must fit in a micro-batch")
        return self

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoint.dir or Path(self.output_dir) / "checkpoints")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML/JSON (config.yaml, the metrics loggers)."""
        return self.model_dump(mode="json")

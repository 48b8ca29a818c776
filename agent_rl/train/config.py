"""The trainer's configuration: one typed tree loaded from YAML plus dotted overrides.

`load_train_config("configs/smoke-cpu.yaml", ["algorithm.kl_beta=0.01"])` reads the YAML,
applies the overrides and validates `TrainConfig` once: unknown keys, wrong types, values
out of range and batch geometry that does not fit are `ConfigError`s naming the key. The
engine, env, agent and rollout sections are the owning modules' own models (EngineConfig,
EnvConfig, AgentConfig, RolloutConfig), parsed here once and handed on as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field, model_validator

from agent_rl.algo.advantages import AdvantageEstimator, OverlongMode
from agent_rl.algo.loss import LossAggregation
from agent_rl.engines.factory import EngineConfig
from agent_rl.recipes import load_config, parse_override
from agent_rl.rollout.agent import AgentConfig
from agent_rl.rollout.ray_workers import ClusterConfig
from agent_rl.rollout.runner import RolloutConfig
from agent_rl.train.placement import PlacementConfig
from agent_rl.train.task_pool import AdaptivePoolConfig
from envs.swe_env import EnvConfig
from strictconfig import StrictModel

__all__ = ["TrainConfig", "load_train_config", "parse_override"]


class ModelConfig(StrictModel):
    """The policy being trained."""

    config_where: ClassVar[str] = "model"

    name: str = "smollm2-135m"
    """Alias understood by agent_rl.engines.models, or an HF path / local checkpoint dir."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: bf16 on GPU, fp32 on CPU."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    logprob_chunk_size: int = Field(1024, ge=1)
    """Tokens per lm_head chunk when computing logprobs/entropy."""


class LoraConfig(StrictModel):
    """LoRA adapters instead of full fine-tuning."""

    config_where: ClassVar[str] = "lora"

    enabled: bool = False
    """Train LoRA adapters (else every weight)."""
    r: int = Field(16, ge=1)
    """Adapter rank."""
    alpha: int = Field(32, ge=1)
    """Scaling numerator (scale = alpha / r)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter input."""
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names that get adapters."""


class TasksConfig(StrictModel):
    """Which tasks training draws from."""

    config_where: ClassVar[str] = "tasks"

    source: str = "builtin:easy"
    """Anything envs.load_tasks accepts: builtin, builtin:easy, tasks.jsonl, ..."""
    ids: list[str] | None = None
    """Restrict to these instance ids; None: every task of the source."""
    shuffle: bool = True
    """Draw tasks in a seeded random order (else in id order)."""
    sampler: Literal["epoch", "adaptive"] = "epoch"
    """epoch: every task once per seeded epoch (train/sampler.py). adaptive: spend the draws on tasks
    whose running pass rate lies in a band, retire always-solved and park never-solved tasks
    (train/task_pool.py, configured by `adaptive`; in algorithm.mode async it is shown each group
    as the trainer takes it)."""
    adaptive: AdaptivePoolConfig = Field(default_factory=AdaptivePoolConfig)


class ReferenceResetConfig(StrictModel):
    """When the KL reference π_ref is reset to the current policy π_θ."""

    config_where: ClassVar[str] = "algorithm.reference_reset"

    every: int = Field(0, ge=0)
    """Reset every N steps; 0: never on a schedule."""
    on_plateau: bool = False
    """Reset when the training reward stops improving."""
    plateau_window: int = Field(10, ge=1)
    """Steps per window compared."""
    plateau_min_delta: float = 0.01
    """A smaller improvement than this between windows is a plateau."""
    reset_optimizer: bool = False
    """ProRL also resets the optimizer state at a hard reset."""


class AlgorithmConfig(StrictModel):
    """DAPO's loss, advantages, filtering and batch geometry (formulas: ARCHITECTURE.md)."""

    config_where: ClassVar[str] = "algorithm"

    mode: Literal["sync", "async"] = "sync"
    """sync: roll out, then update, then roll out again. async: rollouts run continuously in
    the background and the trainer takes finished groups (train/async_rollouts.py)."""
    max_staleness: int = Field(1, ge=0)
    """async: η, the most policy versions a trained trajectory may lag the trainer (older
    groups are dropped, counted, and their task drawn again); 0 is on-policy."""
    loss_aggregation: LossAggregation = "token-mean"
    """How per-token losses become one number."""
    eps_low: float = Field(0.2, ge=0, lt=1)
    """Lower clip: ratio >= 1 - eps_low."""
    eps_high: float = Field(0.28, ge=0)
    """Upper clip (DAPO's clip-higher): ratio <= 1 + eps_high."""
    dual_clip_c: float | None = Field(None, gt=1)
    """Dual-clip bound on the loss of negative advantages; None: off."""
    advantage_estimator: AdvantageEstimator = "grpo"
    """Group baseline: grpo (mean/std), drgrpo (mean only), rloo (leave-one-out mean)."""
    dynamic_sampling: bool = True
    """Drop groups whose rewards are all equal and sample more (DAPO)."""
    max_generation_rounds: int = Field(3, ge=1)
    """Rollout rounds per step when dynamic sampling refills the batch."""
    overlong_mode: OverlongMode = "none"
    """What happens to overlong episodes: none, mask, soft (length penalty), turns."""
    overlong_max_tokens: int = Field(4096, ge=1)
    """soft: L_max, in sampled tokens."""
    overlong_cache_tokens: int = Field(1024, ge=0)
    """soft: L_cache, the ramp before L_max."""
    overlong_turn_threshold: int = Field(30, ge=0)
    """turns: T_thr."""
    overlong_max_turns: int = Field(50, ge=1)
    """turns: T_max."""
    kl_beta: float = Field(0.0, ge=0)
    """Weight of the KL penalty to the reference; 0: no reference model."""
    reference_reset: ReferenceResetConfig = Field(default_factory=ReferenceResetConfig)
    tis_cap: float | None = Field(2.0, gt=0)
    """Truncated importance-sampling cap C; None disables the correction."""
    ppo_epochs: int = Field(1, ge=1)
    """Passes over the rollout batch."""
    mini_batch_size: int = Field(8, ge=1)
    """Trajectories per optimizer step."""
    micro_batch_size: int = Field(2, ge=1)
    """Trajectories per forward/backward (gradient accumulation); the most a micro-batch holds."""
    micro_batch_tokens: int | None = Field(None, ge=1)
    """Token budget per micro-batch (rows × longest row): long trajectories go in smaller
    micro-batches instead of padding a whole one; None: micro_batch_size rows each."""
    entropy_coef: float = Field(0.0, ge=0)
    """Weight of the entropy bonus."""
    norm_length: int = Field(4096, ge=1)
    """seq-mean-token-sum-norm's constant length."""

    @model_validator(mode="after")
    def _fit_together(self) -> "AlgorithmConfig":
        # Every optimizer step sees a full mini-batch of whole micro-batches.
        if self.micro_batch_size > self.mini_batch_size:
            raise ValueError(f"micro_batch_size ({self.micro_batch_size}) must be <= mini_batch_size ({self.mini_batch_size})")
        if self.mini_batch_size % self.micro_batch_size:
            raise ValueError(f"mini_batch_size ({self.mini_batch_size}) must be a multiple of micro_batch_size ({self.micro_batch_size})")
        if self.overlong_mode == "soft" and not 0 < self.overlong_cache_tokens <= self.overlong_max_tokens:
            raise ValueError("overlong_cache_tokens must be in (0, overlong_max_tokens]")
        if self.overlong_mode == "turns" and self.overlong_max_turns <= self.overlong_turn_threshold:
            raise ValueError("overlong_max_turns must exceed overlong_turn_threshold")
        return self


class OptimConfig(StrictModel):
    """AdamW and the learning-rate schedule."""

    config_where: ClassVar[str] = "optim"

    lr: float = Field(1e-6, gt=0)
    """Peak learning rate (write 1.0e-6: YAML reads 1e-6 as a string)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW's decoupled weight decay."""
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.999], min_length=2, max_length=2)
    """AdamW's (beta1, beta2)."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps."""
    scheduler: Literal["constant", "linear", "cosine"] = "constant"
    """The schedule after warm-up."""
    grad_clip: float = Field(1.0, gt=0)
    """Max global gradient norm."""


class CheckpointConfig(StrictModel):
    """Where and how often checkpoints are written."""

    config_where: ClassVar[str] = "checkpoint"

    dir: str = ""
    """Empty: <output_dir>/checkpoints."""
    every: int = Field(10, ge=0)
    """Steps between checkpoints; 0: only at the end."""
    keep_last: int = Field(3, ge=1)
    """Checkpoints kept on disk."""
    save_optimizer: bool = True
    """False writes export-only checkpoints (model + metrics)."""


class LoggingConfig(StrictModel):
    """Where metrics go besides metrics.jsonl."""

    config_where: ClassVar[str] = "logging"

    tensorboard: bool = True
    """TensorBoard event files under output_dir."""
    wandb: bool = False
    """Log to Weights & Biases (needs the wandb extra)."""
    wandb_project: str = "agent-rl"
    """The W&B project name."""
    progress: bool = True
    """A live progress bar (else one line per step)."""


class WeightSyncConfig(StrictModel):
    """Checking that the engine samples from the weights the trainer just pushed."""

    config_where: ClassVar[str] = "weight_sync"

    verify: bool = True
    """Probe after every push."""
    tolerance: float = Field(1e-3, gt=0)
    """Max |Δ logprob| on the probe between trainer and engine."""
    probe_tokens: int = Field(32, ge=1)
    """Tokens generated for the probe."""


class DistributedConfig(StrictModel):
    """How N training ranks shard the policy (FSDP2). The rank count comes from the launcher:
    `torchrun --nproc-per-node N -m agent_rl.cli train ...`; one process ignores this section."""

    config_where: ClassVar[str] = "distributed"

    mixed_precision: bool = True
    """CUDA only: bf16 compute, fp32 gradient reduction."""
    cpu_offload: bool = False
    """Keep parameter, gradient and optimizer shards in host memory."""
    reshard_after_forward: bool = True
    """Free each layer's gathered weights after its forward (less memory, one more all-gather)."""
    timeout_s: float = Field(7200.0, gt=0)
    """Longest a collective may wait: the other ranks wait for rank 0's whole rollout."""


class TrainConfig(StrictModel):
    """`agent-rl train`'s whole configuration: the tree a recipe in configs/ describes."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    weight_sync: WeightSyncConfig = Field(default_factory=WeightSyncConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    seed: int = 0
    """Seeds Python, NumPy, torch, task order and episodes."""
    output_dir: str = "runs/train"
    """Metrics, curves, the resolved config.yaml and (by default) checkpoints."""
    max_steps: int = Field(10, ge=1)
    """Optimizer batches to train for."""

    @model_validator(mode="after")
    def _fit_together(self) -> "TrainConfig":
        ro, alg = self.rollout, self.algorithm
        if self.batch_size % alg.mini_batch_size:
            raise ValueError(
                f"rollout batch = tasks_per_step × group_size = {ro.tasks_per_step} × {ro.group_size} = "
                f"{self.batch_size} trajectories, which is not a multiple of algorithm.mini_batch_size "
                f"({alg.mini_batch_size})"
            )
        if alg.mode == "async" and ro.step_deadline is not None:
            # Refused, not ignored: the async producer has no step to cut.
            raise ValueError(
                "rollout.step_deadline cuts the stragglers of a synchronous step; in algorithm.mode async a step "
                "takes the first groups to finish, so a straggler never holds it (it is trained later or dropped "
                "as stale; with max_staleness 0 use mode sync), and rollout.episode_deadline_s bounds a hung "
                "episode: remove rollout.step_deadline")
        temperature = self.agent.sampling.temperature
        if temperature <= 0:
            raise ValueError(f"agent.sampling.temperature must be > 0 for training (got {temperature}): "
                             "greedy decoding has no usable logprobs")
        return self

    @property
    def batch_size(self) -> int:
        """Trajectories per rollout batch."""
        return self.rollout.tasks_per_step * self.rollout.group_size

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoint.dir or Path(self.output_dir) / "checkpoints")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples) for YAML/JSON: what config.yaml and the metrics loggers get."""
        return self.model_dump(mode="json")


def load_train_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A recipe plus `key=value` overrides as a validated TrainConfig (ConfigError names the bad key)."""
    return load_config(TrainConfig, path, overrides)

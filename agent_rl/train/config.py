"""The trainer's configuration: nested strict dataclasses loaded from YAML plus dotted overrides.

`load_train_config("configs/smoke-cpu.yaml", ["algorithm.kl_beta=0.01"])` reads the YAML,
applies the overrides, builds `TrainConfig` (unknown keys are errors naming the key) and
checks that the numbers fit together (`TrainConfig.validate`). The engine, env and agent
sections are owned by their modules; they are kept as mappings here and checked by building
those modules' own strict configs in `validate`, so a typo there is caught before any model
is loaded.
"""
from __future__ import annotations

import dataclasses
import importlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from agent_rl.algo.advantages import ADVANTAGE_ESTIMATORS, OVERLONG_MODES
from agent_rl.algo.loss import LOSS_AGGREGATIONS
from sandboxes.strict import ConfigError, from_mapping, set_dotted, to_dict


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


_SCALARS = {int: "an integer", float: "a number", bool: "true/false", str: "a string"}


def check_scalar_types(obj: Any, where: str) -> None:
    """YAML gives strings for typos like `lr: 1e-6x`; say which key has the wrong type."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_scalar_types(value, f"{where}.{f.name}")
            continue
        hint = hints[f.name]
        optional = type(None) in typing.get_args(hint)
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
        if base not in _SCALARS or (value is None and optional):
            continue
        ok = isinstance(value, base) and not (base is int and isinstance(value, bool))
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(obj, f.name, float(value))
            ok = True
        _check(ok, f"{where}.{f.name} must be {_SCALARS[base]}, got {value!r}")


def _one_of(value: str, choices: Sequence[str], where: str) -> None:
    _check(value in choices, f"{where}: {value!r} is not one of {', '.join(choices)}")


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"  # alias understood by agent_rl.engines.models, or an HF path
    dtype: str = "auto"  # auto = bf16 on GPU, fp32 on CPU
    device: str = "auto"
    gradient_checkpointing: bool = False
    logprob_chunk_size: int = 1024  # tokens per lm_head chunk when computing logprobs/entropy


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class TasksConfig:
    source: str = "builtin:easy"  # anything envs.load_tasks accepts
    ids: list[str] | None = None  # restrict to these instance ids
    shuffle: bool = True


@dataclass
class RolloutConfig:
    group_size: int = 4  # G trajectories per task
    tasks_per_step: int = 2  # groups per optimizer batch
    concurrency: int = 4  # episodes in flight at once
    # The sampling temperature is agent.sampling.temperature: the trainer recomputes logprobs with it.


@dataclass
class ReferenceResetConfig:
    every: int = 0  # reset π_ref to π_θ every N steps (0 = never on a schedule)
    on_plateau: bool = False  # reset when the training reward stops improving
    plateau_window: int = 10  # steps per window compared
    plateau_min_delta: float = 0.01  # smaller improvement than this between windows = plateau
    reset_optimizer: bool = False  # ProRL also resets the optimizer state at a hard reset


@dataclass
class AlgorithmConfig:
    loss_aggregation: str = "token-mean"
    eps_low: float = 0.2
    eps_high: float = 0.28
    dual_clip_c: float | None = None  # > 1 to bound the loss of negative advantages
    advantage_estimator: str = "grpo"
    dynamic_sampling: bool = True
    max_generation_rounds: int = 3
    overlong_mode: str = "none"  # none | mask | soft | turns
    overlong_max_tokens: int = 4096  # soft: L_max (sampled tokens)
    overlong_cache_tokens: int = 1024  # soft: L_cache
    overlong_turn_threshold: int = 30  # turns: T_thr
    overlong_max_turns: int = 50  # turns: T_max
    kl_beta: float = 0.0
    reference_reset: ReferenceResetConfig = field(default_factory=ReferenceResetConfig)
    tis_cap: float | None = 2.0  # truncated importance-sampling cap C; None disables the correction
    ppo_epochs: int = 1  # passes over the rollout batch
    mini_batch_size: int = 8  # trajectories per optimizer step
    micro_batch_size: int = 2  # trajectories per forward/backward (gradient accumulation)
    entropy_coef: float = 0.0
    norm_length: int = 4096  # seq-mean-token-sum-norm's constant length


@dataclass
class OptimConfig:
    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    scheduler: str = "constant"  # constant | linear | cosine (after warmup)
    grad_clip: float = 1.0


@dataclass
class CheckpointConfig:
    dir: str = ""  # default: <output_dir>/checkpoints
    every: int = 10  # steps; 0 = only at the end
    keep_last: int = 3
    save_optimizer: bool = True  # False writes export-only checkpoints (model + metrics)


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "agent-rl"
    progress: bool = True


@dataclass
class WeightSyncConfig:
    verify: bool = True
    tolerance: float = 1e-3  # max |Δ logprob| on the probe between trainer and engine
    probe_tokens: int = 32


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: dict[str, Any] = field(default_factory=lambda: {"kind": "hf"})
    tasks: TasksConfig = field(default_factory=TasksConfig)
    env: dict[str, Any] = field(default_factory=dict)
    agent: dict[str, Any] = field(default_factory=dict)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    weight_sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    seed: int = 0
    output_dir: str = "runs/train"
    max_steps: int = 10

    @property
    def batch_size(self) -> int:
        """Trajectories per rollout batch."""
        return self.rollout.tasks_per_step * self.rollout.group_size

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoint.dir or Path(self.output_dir) / "checkpoints")

    def validate(self) -> "TrainConfig":
        """Reject impossible values with messages that say what to change."""
        check_scalar_types(self, "train config")
        alg, ro, opt = self.algorithm, self.rollout, self.optim
        _one_of(alg.loss_aggregation, LOSS_AGGREGATIONS, "algorithm.loss_aggregation")
        _one_of(alg.advantage_estimator, ADVANTAGE_ESTIMATORS, "algorithm.advantage_estimator")
        _one_of(alg.overlong_mode, OVERLONG_MODES, "algorithm.overlong_mode")
        _one_of(opt.scheduler, ("constant", "linear", "cosine"), "optim.scheduler")
        _one_of(self.model.dtype, ("auto", "float32", "bfloat16", "float16"), "model.dtype")
        for name in ("group_size", "tasks_per_step", "concurrency"):
            _check(getattr(ro, name) >= 1, f"rollout.{name} must be >= 1, got {getattr(ro, name)}")
        _check(0 <= alg.eps_low < 1, f"algorithm.eps_low must be in [0, 1), got {alg.eps_low}")
        _check(alg.eps_high >= 0, f"algorithm.eps_high must be >= 0, got {alg.eps_high}")
        _check(alg.dual_clip_c is None or alg.dual_clip_c > 1, "algorithm.dual_clip_c must be > 1 (or null)")
        _check(alg.tis_cap is None or alg.tis_cap > 0, "algorithm.tis_cap must be > 0 (or null)")
        _check(alg.kl_beta >= 0 and alg.entropy_coef >= 0, "algorithm.kl_beta and entropy_coef must be >= 0")
        _check(alg.max_generation_rounds >= 1, "algorithm.max_generation_rounds must be >= 1")
        _check(alg.ppo_epochs >= 1, "algorithm.ppo_epochs must be >= 1")
        # Batch geometry: every optimizer step sees a full mini-batch of whole micro-batches.
        _check(alg.micro_batch_size >= 1, "algorithm.micro_batch_size must be >= 1")
        _check(
            alg.micro_batch_size <= alg.mini_batch_size,
            f"algorithm.micro_batch_size ({alg.micro_batch_size}) must be <= mini_batch_size ({alg.mini_batch_size})",
        )
        _check(
            alg.mini_batch_size % alg.micro_batch_size == 0,
            f"algorithm.mini_batch_size ({alg.mini_batch_size}) must be a multiple of micro_batch_size ({alg.micro_batch_size})",
        )
        _check(
            self.batch_size % alg.mini_batch_size == 0,
            f"rollout batch = tasks_per_step × group_size = {ro.tasks_per_step} × {ro.group_size} = {self.batch_size} "
            f"trajectories, which is not a multiple of algorithm.mini_batch_size ({alg.mini_batch_size})",
        )
        if alg.overlong_mode == "soft":
            _check(
                0 < alg.overlong_cache_tokens <= alg.overlong_max_tokens,
                "algorithm.overlong_cache_tokens must be in (0, overlong_max_tokens]",
            )
        if alg.overlong_mode == "turns":
            _check(
                alg.overlong_max_turns > alg.overlong_turn_threshold,
                "algorithm.overlong_max_turns must exceed overlong_turn_threshold",
            )
        rr = alg.reference_reset
        _check(rr.every >= 0 and rr.plateau_window >= 1, "algorithm.reference_reset: every >= 0, plateau_window >= 1")
        _check(opt.lr > 0 and opt.grad_clip > 0 and opt.warmup_steps >= 0, "optim: lr and grad_clip > 0, warmup_steps >= 0")
        _check(len(opt.betas) == 2, "optim.betas must have two values")
        _check(self.lora.r >= 1, "lora.r must be >= 1")
        _check(self.max_steps >= 1, "max_steps must be >= 1")
        _check(self.checkpoint.keep_last >= 1 and self.checkpoint.every >= 0, "checkpoint: keep_last >= 1, every >= 0")
        _check(self.weight_sync.tolerance > 0, "weight_sync.tolerance must be > 0")
        self._validate_owned_sections()
        return self

    def _validate_owned_sections(self) -> None:
        # engine/env/agent belong to other modules; build their strict configs to catch typos.
        sections = [
            ("engine", "agent_rl.engines.factory", "EngineConfig"),
            ("env", "envs.swe_env", "EnvConfig"),
            ("agent", "agent_rl.rollout.agent", "AgentConfig"),
        ]
        for section, module, cls_name in sections:
            try:
                cls = getattr(importlib.import_module(module), cls_name)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"{section}: cannot check this section, {module}.{cls_name} is unavailable ({exc})") from exc
            built = from_mapping(cls, getattr(self, section), section)
            if section == "agent":
                temperature = built.sampling.temperature
                _check(temperature > 0, f"agent.sampling.temperature must be > 0 for training (got {temperature}): "
                       "greedy decoding has no usable logprobs")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` → ("a.b", value), with the value parsed as YAML (so 3, true, null, [1,2] work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. algorithm.kl_beta=0.01)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    return key, yaml.safe_load(raw) if raw.strip() else ""


def load_train_config(path: str | Path | None, overrides: Sequence[str] = (), *, validate: bool = True) -> TrainConfig:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {path}: top level must be a mapping")
        data = dict(loaded or {})
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(data, key, value)
    config = from_mapping(TrainConfig, data, "train config")
    return config.validate() if validate else config

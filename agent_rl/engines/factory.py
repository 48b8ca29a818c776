"""Build an engine from a config section (`engine:` in the YAML recipes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from agent_rl.engines.base import Engine
from sandboxes.strict import ConfigError, from_mapping

ENGINE_KINDS = ("hf", "openai", "vllm")


@dataclass
class EngineConfig:
    kind: Literal["hf", "openai", "vllm"] = "hf"
    model: str = "smollm2-135m"  # alias or local checkpoint dir (for openai: the served name)
    # hf / vllm
    device: str = "cpu"
    dtype: str | None = None
    max_batch_size: int = 8
    batch_wait_ms: float = 5.0
    # openai
    base_url: str | None = None
    mode: Literal["tokens", "text"] = "tokens"
    tokenizer: str | None = None  # alias/dir for text mode's re-tokenization (default: model)
    api_key: str | None = None
    timeout_s: float = 600.0
    max_retries: int = 5
    # vllm
    gpu_memory_utilization: float = 0.85
    max_model_len: int | None = None
    enable_sleep_mode: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ENGINE_KINDS:
            raise ConfigError(f"engine.kind '{self.kind}' is not one of {', '.join(ENGINE_KINDS)}")
        if self.mode not in ("tokens", "text"):
            raise ConfigError(f"engine.mode '{self.mode}' is not 'tokens' or 'text'")
        if self.kind == "openai" and not self.base_url:
            raise ConfigError("engine.base_url is required when engine.kind is 'openai'")
        if self.max_batch_size < 1:
            raise ConfigError("engine.max_batch_size must be >= 1")


def engine_config(data: Mapping[str, Any] | EngineConfig | None) -> EngineConfig:
    return from_mapping(EngineConfig, data, "engine")


def make_engine(spec: Mapping[str, Any] | EngineConfig | None, *, model: Any = None,
                tokenizer: Any = None) -> Engine:
    """Build the engine `spec` describes.

    For kind "hf", pass `model`/`tokenizer` to share an already loaded model (the trainer's)
    instead of loading `spec.model` again.
    """
    config = engine_config(spec)
    if config.kind == "hf":
        from agent_rl.engines.hf import HFEngine

        return HFEngine(
            model if model is not None else config.model,
            tokenizer,
            device=config.device,
            dtype=config.dtype,
            max_batch_size=config.max_batch_size,
            batch_wait_ms=config.batch_wait_ms,
        )
    if config.kind == "openai":
        from agent_rl.engines.openai_http import OpenAIEngine

        if tokenizer is None and config.mode == "text":
            from agent_rl.engines.models import load_tokenizer

            tokenizer = load_tokenizer(config.tokenizer or config.model)
        return OpenAIEngine(
            config.base_url or "",
            config.model,
            tokenizer=tokenizer,
            mode=config.mode,
            api_key=config.api_key,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
        )
    from agent_rl.engines.vllm import VLLMEngine

    return VLLMEngine(
        config.model,
        dtype=config.dtype or "auto",
        gpu_memory_utilization=config.gpu_memory_utilization,
        max_model_len=config.max_model_len,
        enable_sleep_mode=config.enable_sleep_mode,
    )

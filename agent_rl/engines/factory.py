"""Build an engine from a config section (`engine:` in the YAML recipes)."""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Mapping, get_args

from pydantic import Field, model_validator

from agent_rl.engines.base import Engine, EngineError
from strictconfig import StrictModel

EngineKind = Literal["hf", "openai", "vllm"]
ENGINE_KINDS: tuple[str, ...] = get_args(EngineKind)


class EngineConfig(StrictModel):
    """Which inference engine serves the policy, and its settings (`engine:` in the recipes)."""

    config_where: ClassVar[str] = "engine"

    kind: EngineKind = "hf"
    """hf: in-process transformers; openai: an OpenAI-compatible server; vllm: in-process vLLM."""
    model: str = "smollm2-135m"
    """Model alias or local checkpoint dir (for openai: the served model's name)."""
    device: str = "cpu"
    """hf/vllm: cpu, cuda, auto."""
    dtype: str | None = None
    """hf/vllm: float32, bfloat16, float16; None: the engine's choice."""
    max_batch_size: int = Field(8, ge=1)
    """hf: requests batched into one forward pass."""
    batch_wait_ms: float = Field(5.0, ge=0)
    """hf: how long a request waits for others to batch with."""
    base_url: str | None = None
    """openai: the server URL (required for kind openai)."""
    mode: Literal["tokens", "text"] = "tokens"
    """openai: "tokens" (token ids in and out, trainable) or "text" (chat-only servers, evaluation only)."""
    tokenizer: str | None = None
    """openai text mode: alias/dir of the tokenizer for re-tokenization; None: `model`."""
    api_key: str | None = Field(None, exclude=True)
    """openai: bearer token, if the server wants one (never printed or saved with the resolved config)."""
    server: Literal["auto", "agent-rl", "vllm", "generic"] = "auto"
    """openai: what serves base_url, which decides the request fields and how weights are pushed.
    agent-rl (`agent-rl serve`, POST /v1/load_checkpoint) and vllm (`vllm serve` with
    --weight-transfer-config '{"backend": "disk"}': pause, start, update_weights from the checkpoint
    folder, finish, resume) take vLLM's extensions (token-id prompts, return_token_ids, top_k=-1,
    min_p=0, stop_token_ids). generic: any other OpenAI-compatible server (llama.cpp, TGI, a hosted
    API): standard OpenAI fields only, text mode only. auto: asked at start-up: GET /v1/models
    owned_by vllm or agent-rl; otherwise in token mode one token-id probe request must come back
    with token ids (else the run stops, naming mode=text), and in text mode the server is generic."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """openai: fields added as they are to every generation request, e.g. {top_k: 0, min_p: 0,
    repeat_penalty: 1.0} for llama.cpp, whose defaults otherwise truncate sampling."""
    timeout_s: float = Field(600.0, gt=0)
    """openai: seconds per request."""
    max_retries: int = Field(5, ge=0)
    """openai: retries of a failed request."""
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    """vllm: fraction of GPU memory vLLM may take."""
    max_model_len: int | None = Field(None, ge=1)
    """vllm: context window; None: the model's."""
    enable_sleep_mode: bool = False
    """vllm: release GPU memory between rollouts."""

    @model_validator(mode="after")
    def _openai_needs_a_url(self) -> "EngineConfig":
        if self.kind == "openai" and not self.base_url:
            raise ValueError("base_url is required when kind is 'openai'")
        if self.kind == "openai" and self.server == "generic" and self.mode == "tokens":
            raise ValueError("server 'generic' is sent standard OpenAI fields only, and mode 'tokens' needs vLLM's "
                             "token-id extensions: set mode=text (evaluation only), or server auto or vllm")
        return self

    def serving(self, model: str) -> "EngineConfig":
        """This config with `model` unless `model` was set explicitly (a run's top-level
        `model:` names the engine's model by default)."""
        return self if "model" in self.model_fields_set else self.model_copy(update={"model": model})


def engine_config(data: Mapping[str, Any] | EngineConfig | None) -> EngineConfig:
    """`data` as an EngineConfig (errors name the bad key under `engine.`)."""
    return EngineConfig.from_config(data)


def make_engine(spec: Mapping[str, Any] | EngineConfig | None, *, model: Any = None,
                tokenizer: Any = None) -> Engine:
    """Build the engine `spec` describes.

    For kind "hf", pass `model`/`tokenizer` to share an already loaded model (the trainer's)
    instead of loading `spec.model` again.
    """
    config = engine_config(spec)
    if config.kind in ("hf", "vllm"):
        _require_torch(config.kind)
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
            server=config.server,
            extra_body=config.extra_body,
        )
    from agent_rl.engines.vllm import VLLMEngine

    return VLLMEngine(
        config.model,
        dtype=config.dtype or "auto",
        gpu_memory_utilization=config.gpu_memory_utilization,
        max_model_len=config.max_model_len,
        enable_sleep_mode=config.enable_sleep_mode,
    )


def _require_torch(kind: str) -> None:
    """In-process engines need torch; the slim evaluator image (and `pip install agent-rl`
    without the train extra) has none, so say what to use instead of a bare ImportError."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise EngineError(f"engine kind {kind!r} runs the model in this process and needs torch, which is not "
                          "installed: install agent-rl[train] (or use the full image), or evaluate a model served "
                          "elsewhere with --engine openai --base-url URL")

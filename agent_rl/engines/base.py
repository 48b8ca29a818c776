"""The engine contract: token ids in, sampled token ids and their logprobs out.

The agent never re-tokenizes what the model produced, so every engine must hand back the
exact ids it sampled together with the behaviour-policy logprob of each.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from agent_rl.engines.capabilities import Closes, Generates

FinishReason = Literal["stop", "length", "abort", "error"]


class EngineError(RuntimeError):
    """An engine failed in a way the caller cannot treat as a normal finish."""


@dataclass(frozen=True)
class SamplingParams:
    # Defaults follow arXiv 2508.03501: temperature 1.0 and no hidden top-k/min-p, because
    # truncating the distribution makes behaviour logprobs disagree with the trainer's.
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]  # behaviour logprob of each sampled id, same length as token_ids
    finish_reason: FinishReason
    text: str | None = None  # decoded text for display and env stepping, never re-encoded
    text_mode: bool = False  # True when the server could not give token ids (evaluation only)
    info: dict = field(default_factory=dict)


@runtime_checkable
class Engine(Generates, Closes, Protocol):
    """What every engine (hf, openai, vllm) provides: generate and close.

    The rest is optional and declared per engine by the capability Protocols in
    `agent_rl.engines.capabilities` (score logprobs, receive weights, load checkpoint);
    a run checks the ones it needs at start-up with `capabilities.require`.
    """

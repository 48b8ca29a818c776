"""The engine contract: token ids in, sampled token ids and their logprobs out.

The agent never re-tokenizes what the model produced, so every engine must hand back the
exact ids it sampled together with the behaviour-policy logprob of each.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import ConfigDict, Field

from strictconfig import StrictModel

from agent_rl.engines.capabilities import Closes, Generates

FinishReason = Literal["stop", "length", "abort", "error"]


class EngineError(RuntimeError):
    """An engine failed in a way the caller cannot treat as a normal finish."""


# The sampling knobs' ranges, shared with the agent's `sampling:` config section.
Temperature = Annotated[float, Field(ge=0, description="Softmax temperature; 0 is greedy.")]
TopP = Annotated[float, Field(gt=0, le=1, description="Nucleus sampling mass in (0, 1]; 1 keeps the whole distribution.")]


class SamplingParams(StrictModel):
    """How one generation request samples.

    Defaults follow arXiv 2508.03501: temperature 1.0 and no hidden top-k/min-p, because
    truncating the distribution makes behaviour logprobs disagree with the trainer's.
    """

    model_config = ConfigDict(frozen=True)
    config_where: ClassVar[str] = "sampling"

    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    max_tokens: int = Field(512, ge=1)
    """Most tokens to sample."""
    stop: tuple[str, ...] = Field((), strict=False)
    """Stop strings besides the model's EOS."""
    stop_token_ids: tuple[int, ...] = Field((), strict=False)
    """Stop token ids besides the model's EOS."""
    seed: int | None = None
    """Seed of this request's sampler; None: unseeded."""


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

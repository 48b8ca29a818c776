"""What an engine can do, declared as small typed Protocols, and the start-up check on them.

Callers dispatch on these Protocols instead of probing attributes, and every method is async
(`has` refuses a synchronous one). The capabilities, by the name errors use:

  generate           `Generates`         sample a reply to a prompt of token ids
  generate token ids derived             `generate` whose ids are the sampled ones (not a
                                         text-mode server that re-tokenizes its replies)
  score logprobs     `ScoresLogprobs`    teacher-forced logprobs of given tokens
  receive weights    `SharesModel`, `LoadsStateDict` or `ReceivesWeights`
                                         take the trainer's new weights as tensors
  load checkpoint    `LoadsCheckpoint`   load a checkpoint or LoRA adapter directory
  close              `Closes`            release the engine's resources

`require` turns a config's needs (`TRAINING`, `EVALUATION`) into an `EngineCapabilityError`
that names what the engine lacks, so a wrong pairing fails at start-up and not mid-run.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    import torch

    from agent_rl.engines.base import Generation, SamplingParams


@runtime_checkable
class Generates(Protocol):
    """generate: sample from `prompt_ids`; the `Generation` holds the sampled ids and their
    behaviour logprobs (the trainer's importance ratios depend on both)."""

    name: str

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation: ...


@runtime_checkable
class GeneratesFromMessages(Protocol):
    """A chat server that renders its own template (text mode).

    When `wants_messages` is True the agent passes the conversation as `messages=`; the reply's
    ids are re-tokenized from text, so its generations are `text_mode` and never trained on.
    """

    wants_messages: bool

    async def generate(
        self, prompt_ids: list[int], sampling: SamplingParams, *, messages: list[dict] | None = None
    ) -> Generation: ...


@runtime_checkable
class ScoresLogprobs(Protocol):
    """score logprobs: teacher-forced logprobs of `completion_ids` after `prompt_ids` under the
    engine's current weights, with the sampling convention (temperature 0 means unscaled)."""

    async def score_logprobs(
        self, prompt_ids: list[int], completion_ids: list[int], temperature: float = 1.0
    ) -> list[float]: ...


@runtime_checkable
class SharesModel(Protocol):
    """receive weights, in place: the engine samples from a model object in this process.

    When `model` is the trainer's own model, an optimizer step already changed the engine's
    weights; `weights_changed` only records the new policy version (after in-flight batches).
    """

    model: Any

    async def weights_changed(self, version: int | None = None) -> int: ...


@runtime_checkable
class LoadsStateDict(Protocol):
    """receive weights, in process: copy a full state dict (HF parameter names) into the
    engine's own model; returns the new policy version."""

    async def load_weights(self, state_dict: dict[str, torch.Tensor], version: int | None = None) -> int: ...


@runtime_checkable
class ReceivesWeights(Protocol):
    """receive weights, streamed: named tensors (HF parameter names, LoRA merged) go to the
    engine's workers (vLLM); returns the new policy version."""

    async def update_weights(
        self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int | None = None
    ) -> int: ...


@runtime_checkable
class LoadsCheckpoint(Protocol):
    """load checkpoint: load an HF checkpoint or LoRA adapter directory (a served model reads
    it from disk); returns the new policy version."""

    async def load_checkpoint(self, path: str, version: int | None = None) -> int: ...


@runtime_checkable
class Replicated(Protocol):
    """Several served copies of one policy behind one engine (engines/replicas.py): each
    takes the weights, so weight sync verifies each, not whichever one a probe reaches."""

    replicas: list[Any]


@runtime_checkable
class Closes(Protocol):
    """close: release the engine (worker threads, HTTP sessions, GPU memory)."""

    async def close(self) -> None: ...


GENERATE = "generate"
GENERATE_TOKEN_IDS = "generate token ids"
SCORE_LOGPROBS = "score logprobs"
RECEIVE_WEIGHTS = "receive weights"
LOAD_CHECKPOINT = "load checkpoint"
CLOSE = "close"

# Capability name -> the Protocols, any one of which provides it.
PROTOCOLS: dict[str, tuple[type, ...]] = {
    GENERATE: (Generates,),
    SCORE_LOGPROBS: (ScoresLogprobs,),
    RECEIVE_WEIGHTS: (SharesModel, LoadsStateDict, ReceivesWeights),
    LOAD_CHECKPOINT: (LoadsCheckpoint,),
    CLOSE: (Closes,),
}

# What a run needs: every entry is a set of alternatives, one of which must be present.
Needs = Sequence[tuple[str, ...]]
TRAINING: Needs = ((GENERATE_TOKEN_IDS,), (RECEIVE_WEIGHTS, LOAD_CHECKPOINT))
EVALUATION: Needs = ((GENERATE,),)

_WHY = {
    GENERATE_TOKEN_IDS: "a text-mode server re-tokenizes its replies, so nothing it samples can be "
                        "trained on (use engine.mode: tokens)",
    RECEIVE_WEIGHTS: "the trainer pushes its new weights into the engine after every step",
    LOAD_CHECKPOINT: "the trainer pushes its new weights into the engine after every step",
}


class EngineCapabilityError(ValueError):
    """An engine lacks a capability that the run it was configured for needs.

    A ValueError: the config pairs an engine with a run it cannot serve, and the CLIs report
    bad config values as a one-line error.
    """


def _async_methods(protocol: type) -> list[str]:
    return [name for name, member in vars(protocol).items() if inspect.iscoroutinefunction(member)]


def has(engine: Any, protocol: type) -> bool:
    """True when `engine` provides `protocol`, with every one of its methods async."""
    if not isinstance(engine, protocol):
        return False
    return all(inspect.iscoroutinefunction(getattr(engine, name)) for name in _async_methods(protocol))


def wants_messages(engine: Any) -> bool:
    """True for a text-mode chat server that takes the conversation as `messages=`."""
    return has(engine, GeneratesFromMessages) and bool(engine.wants_messages)


def capabilities(engine: Any) -> frozenset[str]:
    """The capability names `engine` provides (see the module docstring)."""
    found = {name for name, protocols in PROTOCOLS.items() if any(has(engine, p) for p in protocols)}
    if GENERATE in found and not wants_messages(engine):
        found.add(GENERATE_TOKEN_IDS)
    return frozenset(found)


def engine_label(engine: Any) -> str:
    name = engine.name if isinstance(engine, Generates) else type(engine).__name__
    return f"{name} (text mode)" if wants_messages(engine) else name


def require(engine: Any, needs: Needs, purpose: str) -> frozenset[str]:
    """Raise `EngineCapabilityError` naming the first need `engine` does not meet.

    `needs` lists alternatives: `((GENERATE,), (RECEIVE_WEIGHTS, LOAD_CHECKPOINT))` means
    "generate, and either receive weights or load a checkpoint". Returns what the engine has.
    """
    have = capabilities(engine)
    for alternatives in needs:
        if have.isdisjoint(alternatives):
            wanted = " or ".join(repr(a) for a in alternatives)
            why = _WHY.get(alternatives[0])
            raise EngineCapabilityError(
                f"engine {engine_label(engine)!r} cannot be used to {purpose}: it lacks {wanted}"
                + (f" ({why})" if why else "")
                + f"; it has: {', '.join(sorted(have)) or 'nothing'}"
            )
    return have

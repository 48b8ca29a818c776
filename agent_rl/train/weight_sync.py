"""Push the trainer's new weights into the inference engine, then prove the engine has them.

The route follows the engine's capability Protocols (agent_rl.engines.capabilities):

  shared            `SharesModel` whose `model` is the trainer's: nothing to copy, only the
                    policy version to bump (the in-process hf engine).
  state_dict        `LoadsStateDict`: a full state dict into the engine's own in-process copy.
  update_weights    `ReceivesWeights`: named tensors streamed to the engine's workers (vllm).
  checkpoint_reload `LoadsCheckpoint`: the trainer writes an HF checkpoint and the engine loads
                    it (an `agent-rl serve` server: `POST /v1/load_checkpoint {"path": DIR}`).

Verification: the engine scores a fixed probe sequence (teacher-forced, `ScoresLogprobs`) or,
lacking that, samples one, and must agree with the trainer's own logprobs within a tolerance.
A sync that silently failed would make every later rollout off-policy, so a mismatch is an
error, not a warning.

Everything that talks to the engine is async; the trainer runs it on the event loop it owns.

Sharded training (train/distributed): the trainer gathers the full state dict (a collective)
and passes it as `context["state"]`; the trainer-side probe is a forward every rank joins,
passed as `context["trainer_logprobs"]` (ids → logprobs) so rank 0 can tell the others
which ids to score.
"""
from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from agent_rl.train.distributed.fsdp import score
from agent_rl.engines.base import SamplingParams
from agent_rl.engines.capabilities import (
    LoadsCheckpoint,
    LoadsStateDict,
    ReceivesWeights,
    Replicated,
    ScoresLogprobs,
    SharesModel,
    engine_label,
    has,
)

PROBE_TEXT = (
    "def add(a, b):\n    return a + b\n\n"
    "The quick brown fox jumps over the lazy dog. git diff --stat; pytest -q tests/\n"
)
PROBE_PROMPT_TOKENS = 4


class WeightSyncError(RuntimeError):
    """The engine did not take the new weights, or scores differently from the trainer."""


@dataclass
class SyncReport:
    method: str
    seconds: float
    verified: bool | None  # None: verification off
    max_abs_diff: float | None
    detail: str = ""


def probe_ids(tokenizer: Any, n_tokens: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n_tokens + PROBE_PROMPT_TOKENS:
        ids += list(tokenizer.encode(PROBE_TEXT, add_special_tokens=False))
    return ids[: n_tokens + PROBE_PROMPT_TOKENS]


@torch.no_grad()
def trainer_probe_logprobs(model: Any, ids: list[int], temperature: float, device: str) -> list[float]:
    was_training = model.training
    model.eval()
    try:
        input_ids = torch.tensor([ids], device=device)
        mask = torch.zeros_like(input_ids)
        mask[0, PROBE_PROMPT_TOKENS:] = 1
        out = score(model, input_ids, torch.ones_like(input_ids), mask, temperature=temperature)
        return out.logprobs[0, PROBE_PROMPT_TOKENS:].tolist()
    finally:
        if was_training:
            model.train()


def merged_named_tensors(model: Any, state: Mapping[str, torch.Tensor] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Plain HF parameter names and full weights (LoRA merged into a copy) for engines that
    load weights; `state`, when given, is that full state dict already gathered."""
    if state is not None:
        yield from state.items()
        return
    if hasattr(model, "peft_config"):
        model = copy.deepcopy(model).merge_and_unload()
    for name, tensor in model.state_dict().items():
        yield name, tensor.detach()


def _export_hf(model: Any, tokenizer: Any, target: Path, state: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write an HF checkpoint the server can load; replaced atomically so it never reads half a file."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if state is not None:
        from agent_rl.train.checkpoint import save_hf_state

        save_hf_state(model, dict(state), tmp)
    else:
        plain = copy.deepcopy(model).merge_and_unload() if hasattr(model, "peft_config") else model
        plain.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


async def push_weights(engine: Any, model: Any, tokenizer: Any, version: int, export_dir: Path,
                       state: Mapping[str, torch.Tensor] | None = None) -> str:
    """Hand the weights to the engine by the first route it supports; returns the route's name.
    `state`: the full state dict, already gathered (sharded training)."""
    if has(engine, SharesModel) and engine.model is model:
        await engine.weights_changed(version)
        return "shared"
    if has(engine, LoadsStateDict):
        await engine.load_weights(dict(merged_named_tensors(model, state)), version)
        return "state_dict"
    if has(engine, ReceivesWeights):
        await engine.update_weights(merged_named_tensors(model, state), version=version)
        return "update_weights"
    if has(engine, LoadsCheckpoint):
        path = _export_hf(model, tokenizer, Path(export_dir) / "current", state)
        await engine.load_checkpoint(str(path.resolve()), version=version)
        return "checkpoint_reload"
    # The trainer checks this at start-up (capabilities.TRAINING); reaching here is a caller bug.
    raise WeightSyncError(f"engine {engine_label(engine)!r} offers no way to receive weights "
                          "(needs 'receive weights' or 'load checkpoint')")


async def _engine_probe(engine: Any, tokenizer: Any, probe_tokens: int, temperature: float) -> tuple[list[int], list[float]]:
    """The engine's logprobs on a probe: teacher-forced if it can score, else on its own sample.

    Any engine can sample, and every sample comes with behaviour logprobs, so a seeded
    generation is a probe too: the trainer rescoring the same tokens must agree.
    """
    ids = probe_ids(tokenizer, probe_tokens)
    prompt = ids[:PROBE_PROMPT_TOKENS]
    if has(engine, ScoresLogprobs):
        completion = ids[PROBE_PROMPT_TOKENS:]
        return prompt + completion, list(await engine.score_logprobs(prompt, completion, temperature=temperature))
    sampling = SamplingParams(temperature=temperature, max_tokens=probe_tokens, seed=1234)
    generation = await engine.generate(prompt, sampling)
    return prompt + list(generation.token_ids), list(generation.logprobs)


async def verify_sync(engine: Any, model: Any, tokenizer: Any, *, temperature: float, tolerance: float,
                      probe_tokens: int, device: str,
                      trainer_logprobs: Callable[[list[int]], list[float]] | None = None,
                      ) -> tuple[bool | None, float | None, str]:
    """(agrees within tolerance, max |Δ logprob|, detail) for the engine against the trainer.
    `trainer_logprobs(ids)` replaces the local trainer probe (sharded training). A replicated
    engine is verified replica by replica: the worst one decides."""
    if has(engine, Replicated):
        outcomes = [await verify_sync(replica, model, tokenizer, temperature=temperature, tolerance=tolerance,
                                      probe_tokens=probe_tokens, device=device, trainer_logprobs=trainer_logprobs)
                    for replica in engine.replicas]
        if not outcomes:
            return False, None, "the engine has no live replica"
        failed = [o for o in outcomes if o[0] is not True]
        verified, diff, detail = failed[0] if failed else max(outcomes, key=lambda o: o[1] or 0.0)
        return verified, diff, f"{len(outcomes)} replicas, worst: {detail}"
    ids, engine_lp = await _engine_probe(engine, tokenizer, probe_tokens, temperature)
    if not engine_lp:
        return None, None, "the engine returned no probe tokens to compare"
    if trainer_logprobs is not None:
        trainer_lp = trainer_logprobs(ids)
    else:
        trainer_lp = trainer_probe_logprobs(model, ids, temperature, device)
    if len(engine_lp) != len(trainer_lp):
        return False, None, f"engine scored {len(engine_lp)} probe tokens, trainer {len(trainer_lp)}"
    diff = max(abs(a - b) for a, b in zip(engine_lp, trainer_lp))
    return diff <= tolerance, diff, f"max |Δ logprob| on {len(engine_lp)} probe tokens = {diff:.2e}"


async def sync_weights(engine: Any, model: Any, tokenizer: Any, version: int, context: dict[str, Any]) -> SyncReport:
    """Push the weights, then (with `context["verify"]`) check them; raise WeightSyncError on a mismatch."""
    started = time.monotonic()
    method = await push_weights(engine, model, tokenizer, version, Path(context["export_dir"]), context.get("state"))
    verified, diff, detail = None, None, "verification off"
    if context.get("verify", True):
        verified, diff, detail = await verify_sync(
            engine, model, tokenizer,
            temperature=context["temperature"], tolerance=context["tolerance"],
            probe_tokens=context["probe_tokens"], device=context["device"],
            trainer_logprobs=context.get("trainer_logprobs"),
        )
        if verified is False:
            raise WeightSyncError(
                f"weight sync to engine {engine_label(engine)!r} ({method}) failed verification: {detail} "
                f"(tolerance {context['tolerance']})"
            )
    return SyncReport(method=method, seconds=time.monotonic() - started, verified=verified, max_abs_diff=diff, detail=detail)

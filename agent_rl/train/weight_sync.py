"""Push the trainer's new weights into the inference engine, then prove the engine has them.

  hf      the engine shares the model object in-process: nothing to copy, only the policy
          version to bump (or a state-dict copy if it holds its own model).
  vllm    the engine's `update_weights(named_tensors)`.
  openai  an `agent-rl serve` server: the trainer writes an HF checkpoint and asks the server
          to load it (`POST /v1/load_checkpoint {"path": DIR}`), through the engine's
          `load_checkpoint(path)`.

Verification: the engine scores a fixed probe sequence (teacher-forced) and must agree with
the trainer's own logprobs within a tolerance. A sync that silently failed would make every
later rollout off-policy, so a mismatch is an error, not a warning.
"""
from __future__ import annotations

import asyncio
import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from agent_rl.engines.base import SamplingParams
from agent_rl.algo.logprobs import token_scores

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


def _maybe_await(value: Any) -> Any:
    return asyncio.run(value) if asyncio.iscoroutine(value) else value


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
        score = torch.zeros_like(input_ids)
        score[0, PROBE_PROMPT_TOKENS:] = 1
        out = token_scores(model, input_ids, torch.ones_like(input_ids), score, temperature=temperature)
        return out.logprobs[0, PROBE_PROMPT_TOKENS:].tolist()
    finally:
        if was_training:
            model.train()


def merged_named_tensors(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """Plain HF parameter names and full weights (LoRA merged into a copy) for engines that load weights."""
    if hasattr(model, "peft_config"):
        model = copy.deepcopy(model).merge_and_unload()
    for name, tensor in model.state_dict().items():
        yield name, tensor.detach()


def _export_hf(model: Any, tokenizer: Any, target: Path) -> Path:
    """Write an HF checkpoint the server can load; replaced atomically so it never reads half a file."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain = copy.deepcopy(model).merge_and_unload() if hasattr(model, "peft_config") else model
    plain.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def push_weights(engine: Any, model: Any, tokenizer: Any, version: int, export_dir: Path) -> str:
    """Hand the weights to the engine; returns the method used."""
    if getattr(engine, "model", None) is model:
        engine.weights_updated(version)
        return "shared"
    if hasattr(engine, "load_state_dict") and getattr(engine, "name", "") == "hf":
        engine.load_state_dict(dict(merged_named_tensors(model)), version)
        return "state_dict"
    if hasattr(engine, "update_weights"):
        _maybe_await(engine.update_weights(merged_named_tensors(model), version=version))
        return "update_weights"
    if hasattr(engine, "load_checkpoint"):
        path = _export_hf(model, tokenizer, Path(export_dir) / "current")
        _maybe_await(engine.load_checkpoint(str(path.resolve()), version=version))
        return "checkpoint_reload"
    raise WeightSyncError(
        f"engine {getattr(engine, 'name', type(engine).__name__)!r} offers no way to receive weights "
        "(needs a shared model, update_weights or load_checkpoint)"
    )


def _engine_probe(engine: Any, tokenizer: Any, probe_tokens: int, temperature: float) -> tuple[list[int], list[float]]:
    """The engine's logprobs on a probe: teacher-forced if it can score, else on its own sample.

    Any engine can sample, and every sample comes with behaviour logprobs, so a seeded
    generation is a probe too: the trainer rescoring the same tokens must agree.
    """
    ids = probe_ids(tokenizer, probe_tokens)
    prompt = ids[:PROBE_PROMPT_TOKENS]
    score = getattr(engine, "compute_logprobs", None)
    if score is not None:
        completion = ids[PROBE_PROMPT_TOKENS:]
        return prompt + completion, list(_maybe_await(score(prompt, completion, temperature=temperature)))
    sampling = SamplingParams(temperature=temperature, max_tokens=probe_tokens, seed=1234)
    generation = _maybe_await(engine.generate(prompt, sampling))
    return prompt + list(generation.token_ids), list(generation.logprobs)


def verify_sync(engine: Any, model: Any, tokenizer: Any, *, temperature: float, tolerance: float,
                probe_tokens: int, device: str) -> tuple[bool | None, float | None, str]:
    ids, engine_lp = _engine_probe(engine, tokenizer, probe_tokens, temperature)
    if not engine_lp:
        return None, None, "the engine returned no probe tokens to compare"
    trainer_lp = trainer_probe_logprobs(model, ids, temperature, device)
    if len(engine_lp) != len(trainer_lp):
        return False, None, f"engine scored {len(engine_lp)} probe tokens, trainer {len(trainer_lp)}"
    diff = max(abs(a - b) for a, b in zip(engine_lp, trainer_lp))
    return diff <= tolerance, diff, f"max |Δ logprob| on {len(engine_lp)} probe tokens = {diff:.2e}"


def sync_weights(engine: Any, model: Any, tokenizer: Any, version: int, context: dict[str, Any]) -> SyncReport:
    started = time.monotonic()
    method = push_weights(engine, model, tokenizer, version, Path(context["export_dir"]))
    verified, diff, detail = None, None, "verification off"
    if context.get("verify", True):
        verified, diff, detail = verify_sync(
            engine, model, tokenizer,
            temperature=context["temperature"], tolerance=context["tolerance"],
            probe_tokens=context["probe_tokens"], device=context["device"],
        )
        if verified is False:
            raise WeightSyncError(
                f"weight sync to engine {getattr(engine, 'name', '?')!r} ({method}) failed verification: {detail} "
                f"(tolerance {context['tolerance']})"
            )
    return SyncReport(method=method, seconds=time.monotonic() - started, verified=verified, max_abs_diff=diff, detail=detail)

"""FSDP2 sharding of the policy, and the state-dict moves that sharding makes collective.

`shard(model, ranks, settings)` applies `torch.distributed.fsdp.fully_shard` to every
decoder layer and then to the root, so each rank keeps 1/N of the parameters, gradients and
(once the optimizer is built on the sharded parameters) optimizer state, and all-gathers one
layer at a time in forward and backward. On CUDA the parameters compute in bf16 and reduce
gradients in fp32 (`MixedPrecisionPolicy`); `cpu_offload` keeps shards in host memory.

Every function here that touches a sharded model is a collective: all ranks call it, in the
same order, or the group hangs. The trainer arranges that.

Checkpoints (`save_sharded`/`load_sharded`) use torch distributed checkpoint (DCP): each rank
writes its own shards of the model and optimizer state in parallel, and a run resumes on the
same or a different number of ranks (DCP reshards on load).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agent_rl.train.distributed.ranks import Ranks

SHARDED_DIR = "sharded"


@dataclass(frozen=True)
class ShardSettings:
    mixed_precision: bool = True  # CUDA only: bf16 compute, fp32 gradient reduction
    cpu_offload: bool = False
    reshard_after_forward: bool = True


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The repeated transformer blocks: the unit FSDP gathers one at a time.

    HF models name their block classes in `_no_split_modules`; any module of those classes is
    a layer. A model without that list is sharded as one unit (correct, just less memory-lean).
    """
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


class ShardedPolicy(torch.nn.Module):
    """The policy behind a forward that *is* `token_scores`, so FSDP's root hooks run.

    `token_scores` calls the decoder and the output head separately (it never builds the full
    vocabulary logits for every position). FSDP2 gathers the root's own parameters (the
    embeddings, the final norm and a tied head) only in the root's forward, so the scoring has
    to be that forward. Outputs are a tuple, so FSDP sees the tensors that backward flows from.
    """

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, score_mask: torch.Tensor,
                temperature: float, chunk_size: int, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        from agent_rl.algo.logprobs import token_scores

        out = token_scores(self.policy, input_ids, attention_mask, score_mask, temperature=temperature,
                           chunk_size=chunk_size, with_entropy=with_entropy)
        return out.logprobs, out.entropy


def score(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, score_mask: torch.Tensor,
          *, temperature: float = 1.0, chunk_size: int = 1024, with_entropy: bool = False) -> Any:
    """`token_scores` for a plain or a sharded policy (the one call site for both)."""
    from agent_rl.algo.logprobs import TokenScores, token_scores

    if isinstance(model, ShardedPolicy):
        logprobs, entropy = model(input_ids, attention_mask, score_mask, temperature, chunk_size, with_entropy)
        return TokenScores(logprobs=logprobs, entropy=entropy)
    return token_scores(model, input_ids, attention_mask, score_mask, temperature=temperature,
                        chunk_size=chunk_size, with_entropy=with_entropy)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The HF model inside a ShardedPolicy (its parameters are still sharded)."""
    return model.policy if isinstance(model, ShardedPolicy) else model


def shard(model: torch.nn.Module, ranks: Ranks, settings: ShardSettings, device: str) -> torch.nn.Module:
    """Shard `model` over all ranks, returning the ShardedPolicy that wraps it (the model
    itself, untouched, for one process)."""
    if not ranks.distributed:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    on_gpu = str(device).startswith("cuda")
    mesh = init_device_mesh("cuda" if on_gpu else "cpu", (ranks.world_size,))
    options: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": settings.reshard_after_forward}
    if on_gpu and settings.mixed_precision:
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if settings.cpu_offload:
        options["offload_policy"] = CPUOffloadPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, **options)
    wrapped = ShardedPolicy(model)
    fully_shard(wrapped, **options)
    return wrapped


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def set_gradient_sync(model: Any, enabled: bool) -> None:
    """Skip the reduce-scatter on all but the last micro-batch of an optimizer step (FSDP2's
    gradient accumulation); a no-op for an unsharded model."""
    if is_sharded(model):
        model.set_requires_gradient_sync(enabled)


def as_local_float(value: Any) -> float:
    """A scalar that may be a DTensor (e.g. the grad norm of sharded parameters)."""
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    return float(value)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole, unsharded state dict on CPU, keyed as the HF model names it: on rank 0 only
    (other ranks get {}). Collective."""
    if not is_sharded(model):
        return {k: v.detach() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix("policy."): v for k, v in state.items()}


def copy_weights(target: torch.nn.Module, source: torch.nn.Module) -> None:
    """target ← source for two models sharded the same way (the reference reset). Local: each
    rank copies its own shards, no communication."""
    with torch.no_grad():
        for (name, dst), (_, src) in zip(target.state_dict().items(), source.state_dict().items()):
            dst.copy_(src)


def _dcp_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """This rank's sharded state dicts, as DCP writes and fills them."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer if optimizer is not None else [])
    return {"model": model_state, **({"optimizer": optim_state} if optimizer is not None else {})}


def save_sharded(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Every rank writes its shards of the model (and optimizer) under directory/sharded/. Collective."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_dcp_state(model, optimizer), checkpoint_id=str(Path(directory) / SHARDED_DIR))


def load_sharded(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Every rank reads its shards back from directory/sharded/ (written with any rank count). Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = _dcp_state(model, optimizer)
    dcp.load(state, checkpoint_id=str(Path(directory) / SHARDED_DIR))
    set_state_dict(model, optimizer if optimizer is not None else [], model_state_dict=state["model"],
                   optim_state_dict=state.get("optimizer", {}))

"""Does a recipe fit the hardware it says it needs? `agent-rl train --dry-run` asks this
before anything starts.

A recipe's `placement:` states the machines (nodes × GPUs of some memory, or CPU). The
estimate per GPU is the persistent training state, which dominates and is knowable up front:

    policy   P × bytes(dtype) × 4 / ranks    parameters, gradients, Adam's two moments,
                                             sharded over ranks by FSDP2 (0 on the GPU
                                             with distributed.cpu_offload)
    LoRA     P × bytes(dtype)                the frozen base, whole on its one rank
    reference P × bytes(dtype) / ranks       when a KL term or reference resets need it
    engine   gpu_memory_utilization × memory an in-process vLLM on the same GPU (0 with sleep
                                             mode, which frees it while the trainer runs)

Activations and the gathered layer come on top; the check keeps 20% of the GPU for them
and says so. P comes from the model's own config (instantiated on the meta device: no
weights are read) or, for a model that is not on this machine, from placement.model_params_b.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from strictconfig import StrictModel

GIB = 1024**3
HEADROOM = 0.8  # of each GPU's memory, for persistent state; the rest is for activations


class PlacementConfig(StrictModel):
    """The hardware a recipe needs (`placement:`); checked by `--dry-run`."""

    config_where: ClassVar[str] = "placement"

    nodes: int = Field(1, ge=1)
    """Machines the training ranks span (torchrun --nnodes)."""
    gpus_per_node: int = Field(0, ge=0)
    """Training ranks per node, one GPU each (torchrun --nproc-per-node); 0: CPU training."""
    gpu_memory_gib: float = Field(80.0, gt=0)
    """Memory of each GPU."""
    model_params_b: float | None = Field(None, gt=0)
    """Parameters in billions, for a model not on this machine; None: count them from its config."""


class PlacementError(ValueError):
    """The recipe does not fit the hardware it states."""


@dataclass
class PlacementReport:
    ranks: int
    params: float
    per_gpu_gib: dict[str, float]
    gpu_memory_gib: float | None

    @property
    def total_gib(self) -> float:
        return sum(self.per_gpu_gib.values())

    def lines(self) -> list[str]:
        where = (f"{self.ranks} rank(s) on GPUs of {self.gpu_memory_gib:g} GiB" if self.gpu_memory_gib
                 else f"{self.ranks} CPU rank(s)")
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.per_gpu_gib.items())
        return [f"# placement: {where}; model {self.params / 1e9:.2f}B parameters",
                f"# per rank (GiB): {parts}; total {self.total_gib:.1f}"]


def count_parameters(model_name: str) -> int:
    """Parameters of a model (alias or local dir) from its config, on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from agent_rl.engines.models import resolve_checkpoint

    config = AutoConfig.from_pretrained(str(resolve_checkpoint(model_name)), local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def dtype_bytes(dtype: str, on_gpu: bool) -> int:
    if dtype == "auto":
        return 2 if on_gpu else 4  # bf16 on GPU, fp32 on CPU (engines/models.resolve_dtype)
    return 4 if dtype == "float32" else 2


def check_placement(config: Any, params: float | None = None) -> PlacementReport:
    """Estimate each rank's persistent memory for `config` (a TrainConfig) and raise
    PlacementError, naming the levers, when it exceeds the GPUs the recipe states."""
    place = config.placement
    on_gpu = place.gpus_per_node > 0
    ranks = place.nodes * max(place.gpus_per_node, 1)
    if params is None:
        params = place.model_params_b * 1e9 if place.model_params_b else float(count_parameters(config.model.name))
    width = dtype_bytes(config.model.dtype, on_gpu)
    if config.lora.enabled and ranks > 1:
        raise PlacementError(f"placement has {ranks} ranks but lora.enabled: LoRA trains in one process; "
                             "use full fine-tuning across ranks, or one GPU")
    alg = config.algorithm
    needs_reference = alg.kl_beta > 0 or alg.reference_reset.every or alg.reference_reset.on_plateau
    per: dict[str, float] = {}
    if config.lora.enabled:
        per["policy (frozen base)"] = params * width / GIB
    else:
        per["policy (params+grads+adam)"] = 0.0 if config.distributed.cpu_offload and on_gpu else params * width * 4 / ranks / GIB
    if needs_reference:
        per["reference"] = params * width / (1 if config.lora.enabled else ranks) / GIB
    engine = config.engine
    if engine.kind == "vllm" and not engine.enable_sleep_mode and on_gpu:
        per["vllm engine"] = engine.gpu_memory_utilization * place.gpu_memory_gib
    report = PlacementReport(ranks, params, per, place.gpu_memory_gib if on_gpu else None)
    if on_gpu and report.total_gib > HEADROOM * place.gpu_memory_gib:
        raise PlacementError(
            f"the recipe needs about {report.total_gib:.0f} GiB per GPU ({', '.join(f'{k} {v:.0f}' for k, v in per.items())}) "
            f"before activations, over {HEADROOM:.0%} of {place.gpu_memory_gib:g} GiB: add ranks "
            f"(placement.nodes / gpus_per_node, launched with torchrun to match), set distributed.cpu_offload=true, "
            f"use lora, or enable engine.enable_sleep_mode")
    return report

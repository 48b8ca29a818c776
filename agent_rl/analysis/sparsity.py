"""How sparse and how low-rank an RL update is: pure functions over two sets of weights.

**When a parameter counts as changed.** Both values are rounded to a *comparison dtype* and
the parameter changed when the rounded values differ (by more than a tiny absolute floor, the
smallest normal number of that dtype, so flush-to-zero noise in subnormals never counts).
The comparison dtype defaults to the coarser of the two stored dtypes. Why not a relative
tolerance such as eps·|w|: casting a float32 base to bfloat16 moves a value by up to half a
bfloat16 step, while a real one-step bfloat16 update of a value just below a power of two is
about the same size relative to |w|; no single relative threshold separates the two, whereas
"differs after rounding both to the coarser dtype" is exact for both (a cast alone never
counts, any stored update does). Choosing bfloat16 for two float32 checkpoints asks what a
bfloat16 copy of the weights would see change, which is where tiny updates vanish.

**Effective rank of an update ΔW** (2-D parameters only), two numbers:

* the entropy effective rank (Roy & Vetterli, 2007): exp(H(p)) with p_i = σ_i / Σσ_j, the
  singular values of ΔW. It is continuous, equals k for k equal singular values, and is what
  "the update is nearly full rank" means when it is close to min(m, n);
* the numerical rank: the number of σ_i > rtol · σ_max.

Singular values come from the eigenvalues of the smaller Gram matrix in float64 (ΔWᵀΔW or
ΔWΔWᵀ): an embedding-sized ΔW (50k × 576) then costs one 576 × 576 eigendecomposition.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Iterable

import torch

# Layer types by parameter name, first match wins; ordered so "q_proj" is not taken for mlp.
LAYER_TYPE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("lm_head", re.compile(r"(^|\.)(lm_head|embed_out)\.|^output\.weight$")),
    ("embeddings", re.compile(r"(embed_tokens|embed_positions|wte|wpe|word_embeddings|position_embeddings)")),
    ("norm", re.compile(r"(norm|ln_\d|ln_f|layernorm)", re.IGNORECASE)),
    ("attn_qkv", re.compile(r"(qkv_proj|c_attn|query_key_value|Wqkv)\.")),
    ("attn_q", re.compile(r"(q_proj|\.query)\.")),
    ("attn_k", re.compile(r"(k_proj|\.key)\.")),
    ("attn_v", re.compile(r"(v_proj|\.value)\.")),
    ("attn_o", re.compile(r"(o_proj|out_proj|attn\.c_proj|attention\.dense|attention\.output\.dense)\.")),
    ("mlp", re.compile(r"(gate_proj|up_proj|down_proj|gate_up_proj|fc1|fc2|c_fc|mlp\.c_proj|\.w[123]\.|mlp\.|experts)")),
)
_LAYER_INDEX = re.compile(r"\.(?:layers|layer|h|blocks|block)\.(\d+)\.")


def layer_type(name: str) -> str:
    """attn_q/k/v/o (or attn_qkv when fused), mlp, embeddings, norm, lm_head, or other."""
    for kind, pattern in LAYER_TYPE_PATTERNS:
        if pattern.search(name):
            return kind
    return "other"


def layer_index(name: str) -> int | None:
    """The decoder layer a parameter belongs to (model.layers.7.mlp... → 7); None outside layers."""
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) if match else None


def coarser_dtype(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """The dtype with the larger machine epsilon (bfloat16 over float16 over float32)."""
    return a if torch.finfo(a).eps >= torch.finfo(b).eps else b


def changed_mask(before: torch.Tensor, after: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Where the two tensors differ once both are rounded to `dtype` (see the module doc)."""
    if before.shape != after.shape:
        raise ValueError(f"shapes differ: {tuple(before.shape)} vs {tuple(after.shape)}")
    if not dtype.is_floating_point:
        raise ValueError(f"the comparison dtype must be a floating dtype, not {dtype}")
    a = before.detach().to(dtype).float()
    b = after.detach().to(dtype).float()
    return (a - b).abs() > torch.finfo(dtype).tiny


@dataclass(frozen=True)
class ParamChange:
    """One parameter's update."""

    name: str
    shape: tuple[int, ...]
    layer_type: str
    layer: int | None
    numel: int
    changed: int
    update_norm: float  # ‖ΔW‖_F
    weight_norm: float  # ‖W_before‖_F

    @property
    def fraction(self) -> float:
        return self.changed / self.numel if self.numel else 0.0


def param_change(name: str, before: torch.Tensor, after: torch.Tensor, dtype: torch.dtype,
                 delta: torch.Tensor | None = None) -> ParamChange:
    """Counts and norms of one parameter's update; `delta` when the caller knows it exactly."""
    delta = after.detach().double() - before.detach().double() if delta is None else delta.detach().double()
    return ParamChange(
        name=name, shape=tuple(before.shape), layer_type=layer_type(name), layer=layer_index(name),
        numel=before.numel(), changed=int(changed_mask(before, after, dtype).sum().item()),
        update_norm=float(delta.norm().item()), weight_norm=float(before.detach().double().norm().item()),
    )


@dataclass(frozen=True)
class Tally:
    params: int
    changed: int

    @property
    def fraction(self) -> float:
        return self.changed / self.params if self.params else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"params": self.params, "changed": self.changed, "fraction": self.fraction}


def tally(changes: Iterable[ParamChange]) -> Tally:
    items = list(changes)
    return Tally(sum(c.numel for c in items), sum(c.changed for c in items))


def sparsity_summary(changes: Iterable[ParamChange]) -> dict[str, object]:
    """Overall, per layer type and per layer index changed fractions (counted in parameters)."""
    items = list(changes)
    by_type: dict[str, list[ParamChange]] = {}
    by_layer: dict[int, list[ParamChange]] = {}
    for c in items:
        by_type.setdefault(c.layer_type, []).append(c)
        if c.layer is not None:
            by_layer.setdefault(c.layer, []).append(c)
    return {
        "overall": tally(items).as_dict(),
        "by_type": {k: tally(v).as_dict() for k, v in sorted(by_type.items())},
        "by_layer": {str(k): tally(v).as_dict() for k, v in sorted(by_layer.items())},
        "per_parameter": {c.name: {"fraction": c.fraction, **{k: v for k, v in asdict(c).items() if k != "name"}}
                          for c in items},
    }


# --------------------------------------------------------------------------------------
# rank of an update
# --------------------------------------------------------------------------------------


def singular_values(delta: torch.Tensor) -> torch.Tensor:
    """Singular values of a 2-D tensor, descending, float64 (through the smaller Gram matrix)."""
    if delta.dim() != 2:
        raise ValueError(f"singular values need a 2-D tensor, got shape {tuple(delta.shape)}")
    d = delta.detach().double()
    gram = d.T @ d if d.shape[0] >= d.shape[1] else d @ d.T
    eig = torch.linalg.eigvalsh(gram).clamp(min=0.0)
    return eig.sqrt().flip(0)


@dataclass(frozen=True)
class UpdateRank:
    effective_rank: float  # exp(H(σ/Σσ))
    numerical_rank: int  # σ_i > rtol · σ_max
    full_rank: int  # min(m, n)
    rtol: float

    @property
    def effective_rank_fraction(self) -> float:
        return self.effective_rank / self.full_rank if self.full_rank else 0.0


# σ below ~1e-7 σ_max are beyond what a float64 Gram matrix resolves (its eigenvalues carry
# ~1e-16 · σ_max² of error), so a smaller default rtol would count rounding as rank.
DEFAULT_RANK_RTOL = 1e-6


def update_rank(delta: torch.Tensor, rtol: float = DEFAULT_RANK_RTOL) -> UpdateRank:
    """Entropy effective rank and numerical rank of ΔW; a zero update has rank 0."""
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must be in (0, 1), got {rtol}")
    sigma = singular_values(delta)
    full = min(delta.shape)
    top = float(sigma[0].item()) if sigma.numel() else 0.0
    if top == 0.0:
        return UpdateRank(0.0, 0, full, rtol)
    kept = sigma[sigma > rtol * top]
    p = kept / kept.sum()
    entropy = float(-(p * p.log()).sum().item())
    return UpdateRank(math.exp(entropy), int(kept.numel()), full, rtol)

"""SFT examples to padded micro-batches, grouped by length so short rows do not pad to the longest.

An optimizer step takes `batch_size` examples; `length_buckets` sorts them by length and cuts
them into micro-batches whose padded size (rows × longest row) stays within a token budget.
The loss of each micro-batch is normalised by the whole step's masked-token count
(`algo.loss.sft_loss`), so the buckets add up to exactly the unbucketed token-mean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class SFTExample:
    """One training sequence: `input_ids` and a `loss_mask` of the same length (1: learn this token)."""

    input_ids: list[int]
    loss_mask: list[int]
    source: str = ""  # file:line it came from, for error messages

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.loss_mask):
            raise ValueError(f"{self.source}: input_ids ({len(self.input_ids)}) and loss_mask "
                             f"({len(self.loss_mask)}) must align")

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_loss_tokens(self) -> int:
        """Masked tokens that can be scored (position 0 has nothing before it)."""
        return sum(self.loss_mask[1:])


@dataclass
class SFTMicroBatch:
    input_ids: torch.Tensor  # [B, T] right-padded
    attention_mask: torch.Tensor  # [B, T]
    loss_mask: torch.Tensor  # [B, T] float, 0 on padding and position 0


def length_buckets(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices into `lengths`, sorted by length, cut so each bucket's rows × longest ≤ max_tokens.

    A row longer than `max_tokens` gets a bucket of its own. Order is deterministic (stable sort).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    buckets: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted ascending, so lengths[i] is the new longest row of the bucket.
        if current and (len(current) + 1) * lengths[i] > max_tokens:
            buckets.append(current)
            current = []
        current.append(i)
    if current:
        buckets.append(current)
    return buckets


def pad_examples(examples: Sequence[SFTExample], pad_id: int) -> SFTMicroBatch:
    """Right-pad to the longest example; padding is never attended to nor scored."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.float32)
    for row, ex in enumerate(examples):
        n = len(ex)
        ids[row, :n] = torch.tensor(ex.input_ids, dtype=torch.long)
        attn[row, :n] = 1
        mask[row, :n] = torch.tensor(ex.loss_mask, dtype=torch.float32)
    mask[:, 0] = 0.0  # nothing precedes position 0: it cannot be predicted
    return SFTMicroBatch(input_ids=ids, attention_mask=attn, loss_mask=mask)

"""How a mini-batch's rows are cut into micro-batches, and how ranks share them.

Pure functions of row lengths and indices (no tensors beyond index bookkeeping), so the
plans are unit-testable and identical on every rank that computes them.

- `split_for_ranks`: rank r of W takes rows r, r+W, r+2W, ... of the (shuffled) mini-batch.
- `plan_micro_batches`: groups of at most `max_rows` rows and, when `max_tokens` is set, at
  most `max_tokens` padded tokens (rows × longest row, the same buckets SFT uses): long
  trajectories go in small groups, short ones in large groups, instead of padding every
  micro-batch to the longest row of the run.
"""
from __future__ import annotations

from typing import Sequence

from agent_rl.algo.sft_batch import length_buckets


def split_for_ranks(rows: Sequence[int], rank: int, world_size: int) -> list[int]:
    """The rows of `rows` that rank `rank` of `world_size` trains on (strided, so a shuffled
    mini-batch gives every rank a similar mix of lengths)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return list(rows[rank::world_size])


def plan_micro_batches(rows: Sequence[int], lengths: Sequence[int], max_rows: int,
                       max_tokens: int | None = None) -> list[list[int]]:
    """Cut `rows` (indices into `lengths`) into micro-batches.

    Each group has at most `max_rows` rows; with `max_tokens`, also at most `max_tokens`
    padded tokens (len(group) × its longest row): SFT's `length_buckets`, each bucket then cut
    to `max_rows`. A single row longer than `max_tokens` gets a group of its own (it cannot be
    split without changing the loss). Without `max_tokens` the rows keep their order, which is
    the order the single-process update always used.
    """
    if max_rows < 1:
        raise ValueError("max_rows must be >= 1")
    if max_tokens is None:
        return [list(rows[i : i + max_rows]) for i in range(0, len(rows), max_rows)]
    rows = list(rows)
    groups: list[list[int]] = []
    for bucket in length_buckets([lengths[r] for r in rows], max_tokens):
        picked = [rows[i] for i in bucket]
        groups += [picked[i : i + max_rows] for i in range(0, len(picked), max_rows)]
    return groups

"""Who this process is among the training ranks, and the few collectives the trainer uses.

`torchrun --nproc-per-node N -m agent_rl.cli train ...` starts N ranks with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT in their environment; `Ranks.from_env()` reads them
and joins the process group (gloo on CPU, nccl on CUDA). Without them it is the single
process it always was: every method below degrades to the identity, so the trainer calls
them unconditionally and reads the same for 1 and N ranks.

Rank 0 is the driver: it owns the engine, the sandboxes, the metrics and the checkpoint
metadata. Every rank holds a shard of the policy and joins each forward/backward.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: no process group (one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: str = "cpu", timeout_s: float = 7200.0) -> "Ranks":
        """Join the process group torchrun described, or return the one-process Ranks.

        `timeout_s` bounds every collective: the followers wait inside a broadcast while the
        driver rolls out a whole step, which can take many minutes, so the default is long.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if not dist.is_initialized():
            if backend == "nccl":
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        return cls(rank=rank, world_size=world, local_rank=local_rank, backend=backend)

    # ------------------------------------------------------------------ collectives
    def broadcast(self, obj: T | None) -> T:
        """Rank 0's `obj` on every rank (pickled; for batches and decisions, not weights)."""
        if not self.distributed:
            return obj  # type: ignore[return-value]
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def _all_reduce(self, tensor: torch.Tensor, op: Any) -> torch.Tensor:
        # nccl reduces GPU tensors only; the trainer's bookkeeping tensors live on the CPU.
        if self.backend == "nccl" and not tensor.is_cuda:
            on_gpu = tensor.cuda()
            dist.all_reduce(on_gpu, op=op)
            tensor.copy_(on_gpu.cpu())
        else:
            dist.all_reduce(tensor, op=op)
        return tensor

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce SUM in place; returns the tensor."""
        return self._all_reduce(tensor, dist.ReduceOp.SUM) if self.distributed else tensor

    def max_int(self, value: int) -> int:
        """The largest `value` over the ranks (every rank must run as many micro-steps)."""
        if not self.distributed:
            return value
        return int(self._all_reduce(torch.tensor([value], dtype=torch.long), dist.ReduceOp.MAX).item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Leave the group. Ranks meet at a bounded barrier first: a rank that tears its group
        down while a peer's last collective is still in flight can abort the process
        ("terminate called without an active exception" from gloo's threads). A peer that is
        already gone only costs the barrier's timeout."""
        if not (self.distributed and dist.is_initialized()):
            return
        try:
            if self.backend == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=120))
            else:
                dist.barrier()
        except Exception as exc:  # a dead peer: nothing left to wait for
            log.warning("rank %d: leaving the process group without the others: %s", self.rank, exc)
        dist.destroy_process_group()


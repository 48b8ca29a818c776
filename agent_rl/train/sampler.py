"""Which tasks each training step draws, reproducibly and resumably.

Tasks are visited in epochs; each epoch is a permutation seeded by (seed, epoch). The whole
state is two integers, so a resumed run draws exactly the tasks the uninterrupted run would.
"""
from __future__ import annotations

import random
from typing import Any, Protocol, Sequence


class DrawsTasks(Protocol):
    """What the trainer and the async producer use of a task sampler (this epoch sampler, or
    train/task_pool.py's adaptive pool). `peek` must return what the next `take` will, and a
    sampler loaded with `state_dict()` must continue exactly as the one that wrote it."""

    def take(self, n: int) -> list[str]: ...

    def peek(self, n: int) -> list[str]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TaskSampler:
    def __init__(self, task_ids: Sequence[str], seed: int = 0, shuffle: bool = True) -> None:
        if not task_ids:
            raise ValueError("the task set is empty: nothing to train on")
        self.task_ids = list(task_ids)
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.index = 0

    def _order(self, epoch: int) -> list[str]:
        order = list(self.task_ids)
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def take(self, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            order = self._order(self.epoch)
            out.append(order[self.index])
            self.index += 1
            if self.index == len(order):
                self.epoch, self.index = self.epoch + 1, 0
        return out

    def peek(self, n: int) -> list[str]:
        """What the next `take(n)` will return, without drawing it (to warm sandboxes ahead)."""
        epoch, index = self.epoch, self.index
        try:
            return self.take(n)
        finally:
            self.epoch, self.index = epoch, index

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "num_tasks": len(self.task_ids), "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kind = state.get("kind", "epoch")  # epoch states predate the key and never carry it
        if kind != "epoch":
            raise ValueError(f"checkpoint's task sampler is {kind!r}, this run's is 'epoch': resume with the "
                             "same tasks.sampler")
        if state.get("num_tasks") != len(self.task_ids) or state.get("seed") != self.seed:
            raise ValueError(
                f"checkpoint's task sampler ({state.get('num_tasks')} tasks, seed {state.get('seed')}) does not "
                f"match this run ({len(self.task_ids)} tasks, seed {self.seed}): resume with the same tasks and seed"
            )
        self.epoch, self.index = int(state["epoch"]), int(state["index"])

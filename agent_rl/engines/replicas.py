"""One engine over several served replicas of the same policy (`cluster.engine_replicas`).

Each replica is an OpenAI-compatible server in token mode (`agent-rl serve`, or one a Ray
actor runs: rollout/ray_engines.py). The pool is what the trainer holds as its engine:

  generate          to the live replica with the fewest requests in flight; a replica that
                    cannot be reached is marked dead and the request goes to another, so a
                    lost replica costs no episode (one whose server answers with an error
                    is not retried elsewhere: that error is the request's, not the replica's)
  load_checkpoint   every live replica loads the trainer's checkpoint folder (it must be
                    visible to each at the same path: one machine, or a shared filesystem);
                    a replica that fails to load is marked dead, never left serving old
                    weights as if new
  replicas          the live ones, so weight sync verifies each (train/weight_sync.py)

Capabilities: generate (token ids), load checkpoint, close.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import aiohttp

from agent_rl.engines.base import EngineError, Generation, SamplingParams

log = logging.getLogger(__name__)


class NoLiveReplica(EngineError):
    """Every replica of the pool is gone."""


@dataclass
class Replica:
    engine: Any  # an OpenAIEngine in token mode
    label: str  # where it runs (its URL, its node)
    in_flight: int = 0
    served: int = 0
    dead: str = ""  # why it was given up ("" while live)


class ReplicaPool:
    name = "replicas"
    mode = "tokens"
    wants_messages = False

    def __init__(self, engines: Sequence[Any], labels: Sequence[str] | None = None) -> None:
        if not engines:
            raise ValueError("a replica pool needs at least one engine")
        labels = list(labels) if labels is not None else [getattr(e, "base_url", f"replica-{i}") for i, e in enumerate(engines)]
        self._replicas = [Replica(engine, label) for engine, label in zip(engines, labels)]
        self.policy_version = 0

    @property
    def replicas(self) -> list[Any]:
        """The live replicas' engines (weight sync verifies each)."""
        return [r.engine for r in self._live()]

    @property
    def context_window(self) -> int | None:
        windows = [w for w in (getattr(r.engine, "context_window", None) for r in self._replicas) if isinstance(w, int)]
        return min(windows) if windows else None

    def stats(self) -> dict[str, Any]:
        """Requests served per replica, and the ones given up (with why)."""
        return {"served": {r.label: r.served for r in self._replicas},
                "dead": {r.label: r.dead for r in self._replicas if r.dead}}

    def mark_dead(self, label: str, why: str) -> None:
        for replica in self._replicas:
            if replica.label == label and not replica.dead:
                replica.dead = why
                log.warning("engine replica %s given up: %s", label, why)

    async def check(self, label: str, why: str) -> bool:
        """Whether the replica `label` still answers; if not, it is given up (with `why`)."""
        replica = next((r for r in self._live() if r.label == label), None)
        if replica is None:
            return False
        if await self._alive(replica):
            return True
        self.mark_dead(label, why)
        return False

    def _live(self) -> list[Replica]:
        return [r for r in self._replicas if not r.dead]

    def _pick(self) -> Replica:
        live = self._live()
        if not live:
            raise NoLiveReplica("every engine replica is gone: " + "; ".join(f"{r.label}: {r.dead}" for r in self._replicas))
        return min(live, key=lambda r: r.in_flight)

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams, **kwargs: Any) -> Generation:
        while True:
            replica = self._pick()
            replica.in_flight += 1
            try:
                generation = await replica.engine.generate(prompt_ids, sampling, **kwargs)
            except EngineError as exc:
                # Unreachable (its retries spent on connection errors) or refusing: is it alive?
                if await self.check(replica.label, f"unreachable: {exc}"):
                    raise
                continue
            finally:
                replica.in_flight -= 1
            replica.served += 1
            return generation

    @staticmethod
    async def _alive(replica: Replica) -> bool:
        health = getattr(replica.engine, "health", None)
        if health is None:
            return True
        try:
            return bool(await health())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False

    async def load_checkpoint(self, path: str, version: int | None = None) -> int:
        live = self._live()
        results = await asyncio.gather(*(r.engine.load_checkpoint(path, version=version) for r in live),
                                       return_exceptions=True)
        versions = set()
        for replica, result in zip(live, results):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                self.mark_dead(replica.label, f"failed to load {path}: {type(result).__name__}: {result}")
            else:
                versions.add(int(result))
        if not versions:
            raise NoLiveReplica(f"no engine replica loaded {path}: "
                                + "; ".join(f"{r.label}: {r.dead}" for r in self._replicas if r.dead))
        if len(versions) > 1:
            raise EngineError(f"engine replicas report different policy versions after loading {path}: {sorted(versions)}")
        self.policy_version = versions.pop()
        return self.policy_version

    async def close(self) -> None:
        for replica in self._replicas:
            await replica.engine.close()

"""A token-exact multi-turn trajectory.

`response_ids` interleaves the tokens the policy sampled (loss_mask 1) with the tokens the
chat template adds for environment turns (loss_mask 0). `behaviour_logprobs` is aligned with
`response_ids` and is 0.0 wherever the mask is 0. `token_versions`, when present, is aligned
too: the policy version whose weights sampled each token, -1 where the mask is 0. An episode
that was in flight while the trainer pushed new weights (asynchronous training) carries more
than one version; its behaviour logprobs are each token's own. An episode an outside harness
played through the gateway is split into several segments (`segment` of `segments`) when the
harness rewrote its history (agent_rl/gateway/recording.py). `turn_timings` holds one record
per reply, in order (`generation_s`, `env_s`, `total_s`); files written before it was kept
load with [] (as do gateway episodes, whose turns the harness times). `refill` marks an
episode played to replace a group member the step deadline cut (agent_rl/rollout/deadlines.py).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator


@dataclass
class Trajectory:
    task_id: str
    prompt_ids: list[int] = field(default_factory=list)
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    behaviour_logprobs: list[float] = field(default_factory=list)
    reward: float = 0.0
    num_turns: int = 0
    finish_reason: str = ""  # submitted | max_turns | context | time | error | ...
    terminated: bool = False
    truncated: bool = False
    policy_version: int = 0
    group_index: int = 0  # which sample of the group (0..G-1)
    messages: list[dict[str, Any]] = field(default_factory=list)
    grade: dict[str, Any] = field(default_factory=dict)
    patch: str = ""  # the agent's final diff vs the base commit (what was graded)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # set when the episode failed; such trajectories never train
    text_mode: bool = False  # produced by a text-only engine: not token-exact, never train
    token_versions: list[int] = field(default_factory=list)  # [] in files written before versions were kept
    turn_timings: list[dict[str, float]] = field(default_factory=list)  # per reply; [] in older files
    # An outside harness that rewrote its history (gateway sessions) gives one episode several
    # token-exact segments; each is a Trajectory sharing the episode's reward, advantage and
    # group_index. Ordinary episodes are segment 0 of 1.
    segment: int = 0
    segments: int = 1
    # Played by the step deadline's refill round (`partial_groups: refill`) in place of a member
    # the step cut; that member (never trained) is in the batch too, just before it.
    refill: bool = False

    def __post_init__(self) -> None:
        self.check_aligned()

    def check_aligned(self) -> None:
        n = len(self.response_ids)
        if len(self.loss_mask) != n or len(self.behaviour_logprobs) != n:
            raise ValueError(
                f"trajectory {self.task_id}: response_ids ({n}), loss_mask ({len(self.loss_mask)}) "
                f"and behaviour_logprobs ({len(self.behaviour_logprobs)}) must align"
            )
        if self.token_versions and len(self.token_versions) != n:
            raise ValueError(f"trajectory {self.task_id}: token_versions ({len(self.token_versions)}) "
                             f"must align with response_ids ({n})")

    @property
    def trainable(self) -> bool:
        return self.error is None and not self.text_mode and sum(self.loss_mask) > 0

    @property
    def num_sampled_tokens(self) -> int:
        return sum(self.loss_mask)

    @property
    def versions(self) -> list[int]:
        """The policy versions that sampled this trajectory's tokens, oldest first."""
        sampled = {v for v, m in zip(self.token_versions, self.loss_mask) if m}
        return sorted(sampled) if sampled else [self.policy_version]

    @property
    def oldest_version(self) -> int:
        """The version its staleness is judged by: the oldest weights that sampled any of it."""
        return self.versions[0]

    @property
    def resolved(self) -> bool:
        return bool(self.grade.get("resolved", False))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trajectory":
        return cls(**data)

    def to_sft(self) -> dict[str, Any]:
        """Chat-format record for rejection fine-tuning."""
        return {"task_id": self.task_id, "reward": self.reward, "messages": self.messages}


def write_jsonl(trajectories: Iterable[Trajectory], path: str) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for traj in trajectories:
            fh.write(json.dumps(traj.to_dict()) + "\n")
            n += 1
    return n


def read_jsonl(path: str) -> Iterator[Trajectory]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield Trajectory.from_dict(json.loads(line))


def write_sft_jsonl(trajectories: Iterable[Trajectory], path: str, min_reward: float = 1.0) -> int:
    """Keep only successful trajectories (reward >= min_reward) for rejection fine-tuning."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for traj in trajectories:
            if traj.error is None and traj.reward >= min_reward:
                fh.write(json.dumps(traj.to_sft()) + "\n")
                n += 1
    return n

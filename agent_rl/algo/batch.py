"""From graded trajectory groups to padded training tensors.

Reward shaping (overlong handling) and group advantages are applied here, per group, with
the pure functions from `advantages.py`; the result is one row per trajectory:
`input_ids = prompt_ids + response_ids`, scored only where the policy sampled a token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from agent_rl.algo.advantages import group_advantages, shape_reward
from agent_rl.rollout.trajectory import Trajectory


@dataclass(frozen=True)
class ShapingSettings:
    mode: str = "none"
    max_tokens: int = 4096
    cache_tokens: int = 1024
    turn_threshold: int = 30
    max_turns: int = 50
    estimator: str = "grpo"

    @classmethod
    def from_algorithm(cls, alg: Any) -> "ShapingSettings":
        """From the trainer's AlgorithmConfig (`overlong_*` keys and `advantage_estimator`)."""
        return cls(
            alg.overlong_mode, alg.overlong_max_tokens, alg.overlong_cache_tokens,
            alg.overlong_turn_threshold, alg.overlong_max_turns, alg.advantage_estimator,
        )


@dataclass
class TrainBatch:
    trajectories: list[Trajectory]
    input_ids: torch.Tensor  # [N, T] right-padded
    attention_mask: torch.Tensor  # [N, T]
    score_mask: torch.Tensor  # [N, T] 1 on sampled response tokens that train
    behaviour_logprobs: torch.Tensor  # [N, T] the engine's logprobs, 0 elsewhere
    advantages: torch.Tensor  # [N]
    shaped_rewards: list[float]
    penalties: list[float]
    # [N, T] int8, optional: 1 planning, 2 execution, 0 neither (agent_rl.analysis.phases),
    # aligned with input_ids; only per-phase metrics read it, never the loss.
    phase_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.trajectories)

    def rows(self, index: torch.Tensor) -> "TrainBatch":
        """A sub-batch (mini/micro), trimmed to its own longest row to save compute."""
        idx = index.tolist()
        width = int(self.attention_mask[index].sum(dim=1).max().item()) if idx else 0
        return TrainBatch(
            trajectories=[self.trajectories[i] for i in idx],
            input_ids=self.input_ids[index, :width],
            attention_mask=self.attention_mask[index, :width],
            score_mask=self.score_mask[index, :width],
            behaviour_logprobs=self.behaviour_logprobs[index, :width],
            advantages=self.advantages[index],
            shaped_rewards=[self.shaped_rewards[i] for i in idx],
            penalties=[self.penalties[i] for i in idx],
            phase_mask=self.phase_mask[index, :width] if self.phase_mask is not None else None,
        )


def episode_advantages(group: Sequence[Trajectory], rewards: Sequence[float], estimator: str) -> list[float]:
    """Group advantages per episode, each row getting its episode's.

    An episode an outside harness split into segments (it rewrote its history) is several
    consecutive rows, segment 0 first; counting each row as a sample would weight that episode
    by its number of segments, so the statistics run over episodes (a segmented episode's
    reward is its first row's) and every segment gets its episode's advantage."""
    episode_of: list[int] = []
    for row, traj in enumerate(group):
        starts = row == 0 or traj.segment == 0
        episode_of.append(len(set(episode_of)) if starts else episode_of[-1])
    if len(set(episode_of)) == len(group):
        return group_advantages(rewards, estimator)
    firsts = [episode_of.index(e) for e in sorted(set(episode_of))]
    per_episode = group_advantages([rewards[row] for row in firsts], estimator)
    return [per_episode[e] for e in episode_of]


def build_train_batch(groups: Sequence[Sequence[Trajectory]], settings: ShapingSettings, pad_id: int) -> TrainBatch:
    trajectories: list[Trajectory] = []
    advantages: list[float] = []
    shaped_rewards: list[float] = []
    penalties: list[float] = []
    trains: list[bool] = []
    for group in groups:
        shaped = [
            shape_reward(
                t.reward,
                mode=settings.mode,
                truncated=t.truncated,
                response_length=t.num_sampled_tokens,
                num_turns=t.num_turns,
                max_length=settings.max_tokens,
                cache_length=settings.cache_tokens,
                turn_threshold=settings.turn_threshold,
                max_turns=settings.max_turns,
            )
            for t in group
        ]
        advantages += episode_advantages(group, [s.reward for s in shaped], settings.estimator)
        trajectories += list(group)
        shaped_rewards += [s.reward for s in shaped]
        penalties += [s.penalty for s in shaped]
        trains += [s.train for s in shaped]
    width = max((len(t.prompt_ids) + len(t.response_ids) for t in trajectories), default=0)
    n = len(trajectories)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    score = torch.zeros((n, width), dtype=torch.float32)
    behaviour = torch.zeros((n, width), dtype=torch.float32)
    for row, (traj, train) in enumerate(zip(trajectories, trains)):
        p, r = len(traj.prompt_ids), len(traj.response_ids)
        input_ids[row, : p + r] = torch.tensor(traj.prompt_ids + traj.response_ids, dtype=torch.long)
        attention[row, : p + r] = 1
        if train:
            score[row, p : p + r] = torch.tensor(traj.loss_mask, dtype=torch.float32)
        behaviour[row, p : p + r] = torch.tensor(traj.behaviour_logprobs, dtype=torch.float32)
    if width:
        score[:, 0] = 0  # nothing precedes position 0, so it can never be scored
    return TrainBatch(
        trajectories=trajectories,
        input_ids=input_ids,
        attention_mask=attention,
        score_mask=score,
        behaviour_logprobs=behaviour * score,
        advantages=torch.tensor(advantages, dtype=torch.float32),
        shaped_rewards=shaped_rewards,
        penalties=penalties,
    )

"""What a gateway session recorded, and how it becomes token-exact trajectories.

Every model call of a session is kept as a `Call`: the exact prompt ids the engine was fed and
the ids it sampled, with their behaviour logprobs and the policy version that sampled them.
`segment_calls` turns the calls into segments, each one token sequence:

- a call whose prompt extends the current segment's ids (prompt + everything sampled so far)
  token for token continues it: the extra prompt ids (tool results, the next user turn, the
  template's glue) are appended with loss mask 0, the sampled ids with mask 1;
- any other call (the harness truncated, summarised or dropped part of its history) starts a
  new segment. Sampled text is never re-tokenized to make it fit.

The segments of one episode share its reward; `splits` (segments - 1) says how often the
harness rewrote its history.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class Call:
    """One model call as the engine saw it."""

    prompt_ids: list[int]
    sampled_ids: list[int]
    logprobs: list[float]
    policy_version: int = 0
    finish_reason: str = "stop"
    endpoint: str = "chat"  # "chat" or "completions"

    def __post_init__(self) -> None:
        if len(self.sampled_ids) != len(self.logprobs):
            raise ValueError(f"{len(self.sampled_ids)} sampled ids but {len(self.logprobs)} logprobs")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SessionSegment:
    """One token-exact stretch of a session: `prompt_ids + response_ids` is what the model saw."""

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    token_versions: list[int] = field(default_factory=list)
    calls: int = 0

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.response_ids

    def extended_by(self, prompt_ids: Sequence[int]) -> bool:
        """True when `prompt_ids` starts with every id of this segment, in order."""
        n = len(self.prompt_ids) + len(self.response_ids)
        if len(prompt_ids) < n:
            return False
        return (list(prompt_ids[: len(self.prompt_ids)]) == self.prompt_ids
                and list(prompt_ids[len(self.prompt_ids):n]) == self.response_ids)

    def append(self, ids: Sequence[int], *, sampled: bool, logprobs: Sequence[float] = (), version: int = -1) -> None:
        ids = list(ids)
        self.response_ids += ids
        self.loss_mask += [1 if sampled else 0] * len(ids)
        self.logprobs += [float(x) for x in logprobs] if sampled else [0.0] * len(ids)
        self.token_versions += [version if sampled else -1] * len(ids)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def segment_calls(calls: Sequence[Call]) -> list[SessionSegment]:
    """Split a session's calls into token-exact segments (see the module docstring)."""
    segments: list[SessionSegment] = []
    for call in calls:
        current = segments[-1] if segments else None
        if current is not None and current.extended_by(call.prompt_ids):
            current.append(call.prompt_ids[len(current.ids):], sampled=False)
        else:
            current = SessionSegment(prompt_ids=list(call.prompt_ids))
            segments.append(current)
        current.append(call.sampled_ids, sampled=True, logprobs=call.logprobs, version=call.policy_version)
        current.calls += 1
    return segments

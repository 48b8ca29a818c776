"""What `agent-rl sft` learns from: JSONL files of trajectories or chat messages, as token rows.

Two line formats, told apart per line:

- our trajectories (`agent_rl.rollout.trajectory.Trajectory`, what `rollout`, `train` and
  `demos` write): token-exact. The row is `prompt_ids + response_ids`; the loss mask is 0 on the
  prompt and the trajectory's own `loss_mask` on the response, so environment tokens never
  train. Trajectories with an `error` or from a text-mode engine are skipped and counted.
- OpenAI chat messages (`{"messages": [{"role", "content"}, ...]}`, the SWE-Gym / SWE-smith
  form; `Trajectory.to_sft` writes it too): rendered through the tokenizer's chat template.
  Each assistant turn's span is found by rendering the conversation up to it (with the
  generation prompt) and through it: the content's ids plus the end-of-turn token the model
  samples get loss 1, everything else (system, user, tool turns, the generation prompt, the
  newline after the end-of-turn token) 0. Turns are tokenized delta by delta, as the agent
  does at rollout time. Messages after the last assistant turn are dropped.

`only_resolved` keeps successes only (rejection fine-tuning): a trajectory's `grade.resolved`;
a chat record's `resolved` field, or else `reward >= 1`. A malformed line is an error naming
`file:line` (never skipped silently); rows longer than `max_tokens` are dropped and counted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from agent_rl.algo.sft_batch import SFTExample
from agent_rl.rollout.chat_template import (ChatTokenizer, TemplateDriftError, encode, render,
                                            sampled_end_of_turn)
from agent_rl.rollout.trajectory import Trajectory


class SFTDataError(ValueError):
    """A line that is not a usable SFT record; the message starts with `file:line`."""


@dataclass
class SFTDataStats:
    """Counts of what happened to each line read."""

    lines: int = 0
    kept: int = 0
    unresolved: int = 0  # dropped by only_resolved
    unusable: int = 0  # error / text-mode trajectories, or nothing to learn
    too_long: int = 0  # longer than max_tokens
    by_format: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "kept": self.kept, "unresolved": self.unresolved,
                "unusable": self.unusable, "too_long": self.too_long, "by_format": dict(self.by_format)}


def trajectory_example(traj: Trajectory, source: str = "") -> SFTExample:
    """The token-exact row of a trajectory: loss only where its `loss_mask` is 1."""
    return SFTExample(
        input_ids=list(traj.prompt_ids) + list(traj.response_ids),
        loss_mask=[0] * len(traj.prompt_ids) + [int(m) for m in traj.loss_mask],
        source=source,
    )


def _check_messages(messages: Any, source: str) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise SFTDataError(f"{source}: 'messages' must be a non-empty list")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
            raise SFTDataError(f"{source}: messages[{i}] must be an object with string 'role' and 'content'")
    if messages[0]["role"] == "assistant":
        raise SFTDataError(f"{source}: the conversation starts with an assistant turn (nothing prompts it)")
    if not any(m["role"] == "assistant" for m in messages):
        raise SFTDataError(f"{source}: no assistant turn: nothing to learn")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def messages_example(tokenizer: ChatTokenizer, messages: Sequence[dict[str, Any]], source: str = "") -> SFTExample:
    """Render a chat through the tokenizer's template; loss on assistant turns (and their end token) only.

    Raises TemplateDriftError when the template rewrites earlier turns as later ones are added
    (the spans could then not be found token-exactly).
    """
    msgs = _check_messages(list(messages), source)
    ids: list[int] = []
    mask: list[int] = []
    done = ""  # the text the ids so far encode

    def add(piece_ids: list[int], value: int) -> None:
        ids.extend(piece_ids)
        mask.extend([value] * len(piece_ids))

    for i, msg in enumerate(msgs):
        if msg["role"] != "assistant":
            continue
        before = render(tokenizer, msgs[:i], add_generation_prompt=True)
        after = render(tokenizer, msgs[: i + 1], add_generation_prompt=False)
        head = before + msg["content"]
        if not before.startswith(done) or not after.startswith(head):
            raise TemplateDriftError(
                f"{source}: the chat template does not render assistant turn {i} as an extension of the "
                "conversation before it (it rewrites earlier turns), so its tokens cannot be found exactly")
        add(encode(tokenizer, before[len(done):]), 0)
        add(encode(tokenizer, msg["content"]), 1)
        closing = encode(tokenizer, after[len(head):])
        eot = sampled_end_of_turn(tokenizer, closing)
        add(eot, 1)
        add(closing[len(eot):], 0)
        done = after
    return SFTExample(input_ids=ids, loss_mask=mask, source=source)


def _chat_resolved(record: dict[str, Any]) -> bool:
    if "resolved" in record:
        return bool(record["resolved"])
    reward = record.get("reward")
    return isinstance(reward, (int, float)) and reward >= 1.0


def _read_lines(path: Path) -> Iterable[tuple[int, Any]]:
    try:
        fh = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise SFTDataError(f"{path}: no such file") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise SFTDataError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None


def _example(record: Any, tokenizer: ChatTokenizer, source: str, only_resolved: bool,
             stats: SFTDataStats) -> SFTExample | None:
    if not isinstance(record, dict):
        raise SFTDataError(f"{source}: expected a JSON object, got {type(record).__name__}")
    if "prompt_ids" in record:
        stats.by_format["trajectory"] = stats.by_format.get("trajectory", 0) + 1
        try:
            traj = Trajectory.from_dict(record)
        except (TypeError, ValueError) as exc:
            raise SFTDataError(f"{source}: not a valid trajectory: {exc}") from None
        if traj.error is not None or traj.text_mode:
            stats.unusable += 1
            return None
        if only_resolved and not traj.resolved:
            stats.unresolved += 1
            return None
        return trajectory_example(traj, source)
    if "messages" in record:
        stats.by_format["messages"] = stats.by_format.get("messages", 0) + 1
        if only_resolved and not _chat_resolved(record):
            stats.unresolved += 1
            return None
        return messages_example(tokenizer, record["messages"], source)
    raise SFTDataError(f"{source}: neither a trajectory (prompt_ids, response_ids, loss_mask) nor a chat "
                       f"record (messages); keys: {', '.join(sorted(record)) or 'none'}")


def load_sft_examples(paths: Sequence[str | Path], tokenizer: ChatTokenizer, *, only_resolved: bool = False,
                      max_tokens: int | None = None) -> tuple[list[SFTExample], SFTDataStats]:
    """Every usable row of `paths`, in file and line order, and the counts of what was dropped."""
    stats = SFTDataStats()
    examples: list[SFTExample] = []
    for path in map(Path, paths):
        for lineno, record in _read_lines(path):
            stats.lines += 1
            example = _example(record, tokenizer, f"{path}:{lineno}", only_resolved, stats)
            if example is None:
                continue
            if example.num_loss_tokens == 0:
                stats.unusable += 1
            elif max_tokens is not None and len(example) > max_tokens:
                stats.too_long += 1
            else:
                examples.append(example)
    stats.kept = len(examples)
    return examples, stats

"""One episode as the page shows it: summary, timings, turns, token strip, grade and patch."""
from __future__ import annotations

from typing import Any

from agent_rl.view.runs import RunIndex
from agent_rl.view.tokens import LazyTokenizer, token_strip
from agent_rl.view.turns import build_turns, finite_numbers

# Scalars of a trajectory shown as they are; the big lists and the sections below are not.
_META_KEYS = ("policy_version", "group_index", "segment", "segments", "terminated", "truncated", "text_mode")


def episode_detail(index: RunIndex, episode_id: int, tokenizer: LazyTokenizer) -> dict[str, Any]:
    """Everything the episode view needs, as JSON-able data (blocking: may load the tokenizer)."""
    summary = index.get(episode_id)
    record = index.load(episode_id)
    turns = build_turns(record)
    has_tokens = bool(record.get("prompt_ids") or record.get("response_ids"))
    strip = token_strip(record, tokenizer.get()) if has_tokens else None
    versions = sorted({int(v) for v, m in zip(record.get("token_versions") or [], record.get("loss_mask") or []) if m})
    return {
        "summary": summary.to_dict(),
        "meta": {**{k: record[k] for k in _META_KEYS if k in record}, "versions": versions},
        "timings": finite_numbers(record.get("timings")),
        "prompt": turns["prompt"],
        "turns": turns["turns"],
        "turns_note": turns["note"],
        "tokens": strip,
        "tokens_note": "" if strip is None or strip["text"] is not None else (tokenizer.note or "token ids shown"),
        "grade": record.get("grade") if isinstance(record.get("grade"), dict) else {},
        "patch": str(record.get("patch") or ""),
        "error": record.get("error"),
    }

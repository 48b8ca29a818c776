"""`--static OUT.html`: the whole run in one file that opens from disk, no server, no network.

Every episode is rendered up front (turns, token strip, grade, patch) and embedded as JSON in
the page, so the file grows with the run: roughly a few hundred bytes per token of every
episode. `max_episodes` keeps the first N (in the list's order) when a run is too big to ship.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from agent_rl.view.episode import episode_detail
from agent_rl.view.page import render_page
from agent_rl.view.runs import EpisodeNotFound, RunIndex
from agent_rl.view.tokens import LazyTokenizer

log = logging.getLogger(__name__)


def static_data(index: RunIndex, tokenizer: LazyTokenizer, *, max_episodes: int | None = None) -> dict[str, Any]:
    episodes = index.episodes if max_episodes is None else index.episodes[:max_episodes]
    details: dict[str, Any] = {}
    for ep in episodes:
        try:
            details[str(ep.id)] = episode_detail(index, ep.id, tokenizer)
        except EpisodeNotFound as exc:  # its file changed while we read: list it, say so when opened
            log.warning("%s", exc.args[0] if exc.args else exc)
    run = index.describe(tokenizer.spec)
    if len(episodes) < len(index.episodes):
        run["episodes"] = len(episodes)
    return {"run": run, "episodes": [ep.to_dict() for ep in episodes], "details": details}


def write_static(index: RunIndex, tokenizer: LazyTokenizer, out: str | os.PathLike[str], *,
                 max_episodes: int | None = None) -> int:
    """Write the page to `out` (atomically: a reader never sees half a file); returns its size in bytes."""
    page = render_page(static_data(index, tokenizer, max_episodes=max_episodes),
                       title=f"agent-rl view: {index.root.name}")
    path = Path(out).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return len(page.encode("utf-8"))

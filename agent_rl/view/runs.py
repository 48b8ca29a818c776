"""Find a run's episode files, index their episodes, and load one episode when asked.

Where episodes live (any depth under the directory given, so a pipeline's stage dirs work):

* `rollouts/step-NNNNNN.jsonl`: a training run's per-step trajectories (the step is in the name);
* `trajectories.jsonl`: `agent-rl rollout`'s output;
* `results.jsonl`: `agent-rl eval`'s per-sample rows (reward, grade, patch, timings, but no
  messages or tokens: shown as episodes without turns).

The index keeps one small summary per episode and the byte offset of its line; the line itself
(tens of thousands of token ids) is read again only when the episode is opened, so a run of
many steps indexes in one pass without holding every trajectory in memory. A line that is not
JSON, or not an episode of either shape, is counted per file and skipped: a run killed
mid-write has a torn last line, and one bad line must not hide the rest of the run.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

EpisodeKind = Literal["trajectory", "result"]

_STEP_FILE = re.compile(r"^step-(\d+)\.jsonl$")
_SKIPPED_DIRS = {".git", "__pycache__", "node_modules"}


class NoEpisodesError(ValueError):
    """The path holds no episode file, or its files hold no readable episode."""


class EpisodeNotFound(KeyError):
    """No episode has that id, or its file changed since the index was built."""


@dataclass(frozen=True)
class EpisodeFile:
    path: Path
    source: str  # path relative to the run directory, as shown on the page
    step: int | None  # training step from `step-N.jsonl`; None for rollout / eval files
    kind: EpisodeKind


@dataclass(frozen=True)
class EpisodeSummary:
    """What the list shows and filters on; the full episode stays on disk."""

    id: int
    source: str
    line: int  # 1-based line in `source`
    step: int | None
    task: str
    reward: float
    finish_reason: str
    num_turns: int
    resolved: bool
    error: str | None
    group_index: int
    segment: int
    segments: int
    policy_version: int
    sampled_tokens: int
    total_tokens: int
    kind: EpisodeKind

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EpisodeFilter:
    """The list's filters; every field left None matches everything."""

    task: str | None = None  # substring of the task id, case-insensitive
    step: int | None = None
    min_reward: float | None = None
    max_reward: float | None = None
    finish_reason: str | None = None  # exact

    def matches(self, ep: EpisodeSummary) -> bool:
        if self.task and self.task.lower() not in ep.task.lower():
            return False
        if self.step is not None and ep.step != self.step:
            return False
        if self.min_reward is not None and ep.reward < self.min_reward:
            return False
        if self.max_reward is not None and ep.reward > self.max_reward:
            return False
        return not (self.finish_reason and ep.finish_reason != self.finish_reason)

    @classmethod
    def from_query(cls, query: dict[str, str]) -> "EpisodeFilter":
        """From URL query parameters (task, step, min_reward, max_reward, finish_reason);
        a value that is not a number where one is needed raises ValueError naming it."""
        known = {"task", "step", "min_reward", "max_reward", "finish_reason"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise ValueError(f"unknown filter {', '.join(unknown)}; filters: {', '.join(sorted(known))}")

        def number(name: str, kind: type) -> Any:
            text = (query.get(name) or "").strip()
            if not text:
                return None
            try:
                value = kind(text)
            except ValueError:
                raise ValueError(f"filter {name}={text!r} is not {'an integer' if kind is int else 'a number'}") from None
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"filter {name}={text!r} is not a finite number")
            return value

        return cls(
            task=(query.get("task") or "").strip() or None,
            step=number("step", int),
            min_reward=number("min_reward", float),
            max_reward=number("max_reward", float),
            finish_reason=(query.get("finish_reason") or "").strip() or None,
        )


def find_episode_files(root: Path) -> list[EpisodeFile]:
    """Every episode file under `root` (or `root` itself when it is one .jsonl file), in a
    stable order: by directory, then step."""
    root = root.expanduser()
    if root.is_file():
        return [_classify(root, root.parent) or EpisodeFile(root, root.name, None, "trajectory")]
    if not root.is_dir():
        raise NoEpisodesError(f"{root} does not exist")
    files = [f for f in (_classify(p, root) for p in _walk_jsonl(root)) if f is not None]
    return sorted(files, key=lambda f: (str(Path(f.source).parent), f.step if f.step is not None else -1, f.source))


def _walk_jsonl(root: Path) -> Iterable[Path]:
    for path in sorted(root.iterdir()):
        if path.is_dir() and not path.is_symlink() and path.name not in _SKIPPED_DIRS:
            yield from _walk_jsonl(path)
        elif path.is_file() and path.suffix == ".jsonl":
            yield path


def _classify(path: Path, root: Path) -> EpisodeFile | None:
    source = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
    match = _STEP_FILE.match(path.name)
    if match and path.parent.name == "rollouts":
        return EpisodeFile(path, source, int(match.group(1)), "trajectory")
    if path.name == "trajectories.jsonl":
        return EpisodeFile(path, source, None, "trajectory")
    if path.name == "results.jsonl":
        return EpisodeFile(path, source, None, "result")
    return None


@dataclass
class RunIndex:
    """The episodes of one run directory, summarised; `load(id)` reads one back."""

    root: Path
    files: list[EpisodeFile]
    episodes: list[EpisodeSummary] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # source → malformed lines skipped
    _where: list[tuple[EpisodeFile, int]] = field(default_factory=list)  # id → (file, byte offset)

    @classmethod
    def open(cls, root: str | Path) -> "RunIndex":
        root = Path(root).expanduser().resolve()
        files = find_episode_files(root)
        if not files:
            raise NoEpisodesError(
                f"no episode files under {root}: expected rollouts/step-N.jsonl (agent-rl train), "
                "trajectories.jsonl (agent-rl rollout) or results.jsonl (agent-rl eval)"
            )
        index = cls(root=root if root.is_dir() else root.parent, files=files)
        for f in files:
            index._add_file(f)
        if not index.episodes:
            bad = sum(index.skipped.values())
            raise NoEpisodesError(
                f"{root}: {len(files)} episode file(s) but no readable episode"
                + (f" ({bad} malformed line(s) skipped)" if bad else " (all empty)")
            )
        return index

    def _add_file(self, f: EpisodeFile) -> None:
        offset = 0
        with f.path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                start, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                summary = _summarise(raw, f, lineno, len(self.episodes))
                if summary is None:
                    self.skipped[f.source] = self.skipped.get(f.source, 0) + 1
                    continue
                self.episodes.append(summary)
                self._where.append((f, start))

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def filter(self, flt: EpisodeFilter) -> list[EpisodeSummary]:
        return [ep for ep in self.episodes if flt.matches(ep)]

    def get(self, episode_id: int) -> EpisodeSummary:
        if not 0 <= episode_id < len(self.episodes):
            raise EpisodeNotFound(f"no episode {episode_id} (this run has {len(self.episodes)})")
        return self.episodes[episode_id]

    def load(self, episode_id: int) -> dict[str, Any]:
        """The episode's full record, as a trajectory-shaped dict (eval rows are mapped)."""
        summary = self.get(episode_id)
        f, offset = self._where[episode_id]
        try:
            with f.path.open("rb") as fh:
                fh.seek(offset)
                row = json.loads(fh.readline())
        except (OSError, ValueError) as exc:
            raise EpisodeNotFound(f"episode {episode_id} ({f.source}:{summary.line}) cannot be read again: {exc}") from exc
        record = _as_trajectory(row, f.kind) if isinstance(row, dict) else None
        if record is None or str(record.get("task_id")) != summary.task:
            # Rewritten since indexing (a rollout re-run over the same output dir): say so
            # rather than show another episode under this one's id.
            raise EpisodeNotFound(f"{f.source} changed since it was indexed; restart the viewer")
        return record

    def describe(self, tokenizer_spec: str | None) -> dict[str, Any]:
        """The page header's facts: where, how many, what was skipped, what filters offer."""
        return {
            "root": str(self.root),
            "files": [f.source for f in self.files],
            "episodes": len(self.episodes),
            "skipped": dict(self.skipped),
            "skipped_total": self.skipped_total,
            "tokenizer": tokenizer_spec,
            "facets": self.facets(),
        }

    def facets(self) -> dict[str, list[Any]]:
        """The values the filters offer."""
        return {
            "tasks": sorted({ep.task for ep in self.episodes}),
            "steps": sorted({ep.step for ep in self.episodes if ep.step is not None}),
            "finish_reasons": sorted({ep.finish_reason for ep in self.episodes}),
        }


def _summarise(raw: bytes, f: EpisodeFile, lineno: int, episode_id: int) -> EpisodeSummary | None:
    try:
        row = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    record = _as_trajectory(row, f.kind) if isinstance(row, dict) else None
    if record is None:
        return None
    try:
        mask = record.get("loss_mask") or []
        grade = record.get("grade") or {}
        reward = float(record.get("reward", 0.0))
        if not math.isfinite(reward):
            return None
        return EpisodeSummary(
            id=episode_id,
            source=f.source,
            line=lineno,
            step=f.step,
            task=str(record["task_id"]),
            reward=reward,
            finish_reason=str(record.get("finish_reason") or ""),
            num_turns=int(record.get("num_turns") or 0),
            resolved=bool(grade.get("resolved", False)) if isinstance(grade, dict) else False,
            error=None if record.get("error") is None else str(record["error"]),
            group_index=int(record.get("group_index") or 0),
            segment=int(record.get("segment") or 0),
            segments=int(record.get("segments") or 1),
            policy_version=int(record.get("policy_version") or 0),
            sampled_tokens=int(sum(1 for m in mask if m)),
            total_tokens=len(record.get("prompt_ids") or []) + len(record.get("response_ids") or []),
            kind=f.kind,
        )
    except (TypeError, ValueError, KeyError):
        return None


def _as_trajectory(row: dict[str, Any], kind: EpisodeKind) -> dict[str, Any] | None:
    """A trajectory-shaped dict, or None when the row is neither a trajectory nor an eval row."""
    if kind == "trajectory" or "task_id" in row:
        if not isinstance(row.get("task_id"), str):
            return None
        for key in ("prompt_ids", "response_ids", "loss_mask", "behaviour_logprobs", "messages"):
            if key in row and not isinstance(row[key], list):
                return None
        return row
    if not isinstance(row.get("task"), str):
        return None
    # An eval results row: the same facts under the names evaluate.result_row gives them.
    return {
        "task_id": row["task"],
        "reward": row.get("reward", 0.0),
        "finish_reason": row.get("finish_reason", ""),
        "num_turns": row.get("turns", 0),
        "group_index": row.get("sample", 0),
        "grade": row.get("grade") or {},
        "patch": row.get("patch") or "",
        "timings": row.get("timing") or {},
        "error": row.get("error"),
        "messages": [],
    }

"""Expert demonstrations: play the scripted expert in the real environment, keep what resolves.

Every task with a gold patch gets one episode through the normal `EpisodeRunner` (real
Docker workspace, the env's actions, real grading in a fresh container), driven by a
`ScriptedEngine` holding that task's expert replies. An episode is kept only if the grader
says resolved; the kept trajectories are ordinary token-exact `Trajectory` records (loss
mask 1 exactly on the expert's tokens), written as `trajectories.jsonl` and the chat-format
`sft.jsonl` the rollout command also writes, plus `report.json` with one row per task.
"""
from __future__ import annotations

import asyncio
import json
import posixpath
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from agent_rl.demos.expert import ScriptedEngine, expert_replies
from agent_rl.demos.gold_edits import GoldPatchError, parse_patch
from agent_rl.rollout.agent import AgentConfig, check_template
from agent_rl.rollout.chat_template import ChatTokenizer
from agent_rl.rollout.runner import EpisodeRunner
from agent_rl.rollout.trajectory import Trajectory, write_jsonl, write_sft_jsonl
from envs.episode_sandboxes import EpisodeSandboxes
from envs.swe_env import EnvConfig
from envs.tasks import Task
from sandboxes.executor import run_blocking

# Demonstrations view whole regions and write whole edits: give them room by default.
DEMO_AGENT_DEFAULTS: dict[str, Any] = {"max_turns": 30, "max_total_tokens": 16384, "max_tokens_per_turn": 4096}


def base_files(task: Task, paths: Sequence[str], sandboxes: EpisodeSandboxes | None = None) -> dict[str, str]:
    """The base-commit text of `paths` (those that exist): from the task's git repository when
    it is local (built-in, synthesized), else read in a fresh workspace container of its image."""
    repo = Path(task.repo)
    if not (repo / ".git").exists():
        return base_files_from_image(task, paths, sandboxes)
    files = {}
    for path in paths:
        shown = subprocess.run(["git", "-C", str(repo), "show", f"{task.base_commit}:{path}"],
                               capture_output=True, timeout=60)
        if shown.returncode == 0:
            files[path] = shown.stdout.decode("utf-8")
    return files


def base_files_from_image(task: Task, paths: Sequence[str], sandboxes: EpisodeSandboxes | None = None) -> dict[str, str]:
    """`base_files` read in a workspace container of the task's image (what the agent starts from)."""
    from envs.task_images import task_image

    own = sandboxes is None
    sandboxes = sandboxes or EpisodeSandboxes()
    try:
        with sandboxes.workspace(task_image(task), task) as box:
            files = {}
            for path in paths:
                full = posixpath.join(task.workdir, path)
                if box.exec(f"test -f {shlex.quote(full)}", timeout=30).ok:
                    files[path] = box.read_file(full)
            return files
    finally:
        if own:
            sandboxes.close()


def plan(task: Task, action_format: str, sandboxes: EpisodeSandboxes | None = None,
         style: str = "thorough") -> list[str]:
    """The expert's replies for `task`; GoldPatchError when it has none it can play."""
    if not task.patch.strip():
        raise GoldPatchError(f"task {task.instance_id!r} has no gold patch")
    paths = [d.old_path for d in parse_patch(task.patch) if d.old_path]
    return expert_replies(task, base_files(task, paths, sandboxes), action_format, style)


@dataclass
class DemoRow:
    """One task's outcome: `status` is kept, unresolved, error or skipped (no playable gold patch)."""

    task_id: str
    status: str
    turns: int = 0
    reason: str = ""
    failing_tests: list[str] = field(default_factory=list)


@dataclass
class DemoReport:
    tasks: int
    resolved: int
    kept: int
    written: int
    wall_s: float
    rows: list[DemoRow]

    def summary(self) -> dict[str, Any]:
        """Counts and wall time (no per-task rows)."""
        return {k: v for k, v in asdict(self).items() if k != "rows"}


def _row(task: Task, traj: Trajectory) -> DemoRow:
    status = "error" if traj.error else ("kept" if traj.resolved else "unresolved")
    failing = [t for kind in ("FAIL_TO_PASS", "PASS_TO_PASS")
               for t in traj.grade.get("tests_status", {}).get(kind, {}).get("failure", [])]
    reason = traj.error or str(traj.grade.get("error") or "") or traj.finish_reason
    return DemoRow(task.instance_id, status, traj.num_turns, reason, failing[:10])


async def collect_demos(
    tasks: Sequence[Task], tokenizer: ChatTokenizer, out: str | Path, *, concurrency: int = 4,
    env_config: EnvConfig | dict[str, Any] | None = None, agent_config: AgentConfig | dict[str, Any] | None = None,
    on_done: Any = None, style: str = "thorough",
) -> DemoReport:
    """Play the expert (script `style`, see `expert_replies`) on every task, write the kept
    demonstrations and `report.json` under `out`.

    `on_done(row)` is called as each task finishes (progress lines)."""
    started = time.monotonic()
    env_cfg = EnvConfig.from_config(env_config)
    if isinstance(agent_config, AgentConfig):
        agent_cfg = agent_config
    else:
        agent_cfg = AgentConfig.from_config({**DEMO_AGENT_DEFAULTS, **(agent_config or {})})
    check_template(tokenizer, agent_cfg)
    rows: dict[str, DemoRow] = {}
    kept: dict[str, Trajectory] = {}
    gate = asyncio.Semaphore(concurrency)
    async with EpisodeRunner(env_cfg, concurrency=concurrency) as runner:

        async def one(task: Task) -> None:
            async with gate:
                try:
                    replies = await run_blocking(plan, task, env_cfg.action_format, runner.sandboxes, style)
                except Exception as exc:  # no playable script (or its image would not start): say why, go on
                    rows[task.instance_id] = DemoRow(task.instance_id, "skipped", reason=f"{type(exc).__name__}: {exc}")
                else:
                    traj = await runner.episode(task, ScriptedEngine(replies, tokenizer), tokenizer, agent_cfg)
                    rows[task.instance_id] = _row(task, traj)
                    if rows[task.instance_id].status == "kept":
                        kept[task.instance_id] = traj
            if on_done is not None:
                on_done(rows[task.instance_id])

        await asyncio.gather(*(one(t) for t in tasks))
    ordered = [kept[t.instance_id] for t in tasks if t.instance_id in kept]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = write_jsonl(ordered, str(out / "trajectories.jsonl"))
    write_sft_jsonl(ordered, str(out / "sft.jsonl"))
    report = DemoReport(
        tasks=len(tasks), resolved=len(kept), kept=len(ordered), written=written,
        wall_s=round(time.monotonic() - started, 1), rows=[rows[t.instance_id] for t in tasks],
    )
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return report

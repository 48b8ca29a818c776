"""Episodes played by an outside agent harness (`rollout.harness`), recorded by the gateway.

For each episode the runner starts the environment (the task's hardened workspace), opens a
gateway session whose `/exec` runs commands in that workspace, and runs the harness command
with the session's URLs and the task. The harness talks to the model through the gateway and
runs its commands through `/exec` (agent_rl/harnesses/ has the adapter for mini-swe-agent);
it never gets a Docker socket or the hidden tests. When it exits, the environment grades the
workspace's diff in a fresh container, exactly as for our own agent, and the session's
recording becomes the episode's trajectories (one per segment; see gateway/recording.py).

Placeholders of the command template: {base_url} (the session's OpenAI base URL), {exec_url},
{session_url}, {session}, {model}, {task_file} (JSON: instance_id, problem_statement, repo,
workdir), {instance_id}, {workdir}, {python} (this interpreter), {log_dir}. The command is
split like a shell line (shlex) and run without a shell, in its own process group, which is
killed when it outlives `timeout_s` or the episode's deadline.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import signal
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from agent_rl.gateway.tool_calls import ToolCallFormatName
from agent_rl.rollout.trajectory import Trajectory
from strictconfig import StrictModel

log = logging.getLogger(__name__)

PLACEHOLDERS = ("base_url", "exec_url", "session_url", "session", "model", "task_file", "instance_id",
                "workdir", "python", "log_dir")


class HarnessConfig(StrictModel):
    """An outside agent harness that plays the episodes (`rollout.harness`)."""

    config_where: ClassVar[str] = "rollout.harness"

    command: str
    """Command template run once per episode, e.g. "{python} -m agent_rl.harnesses.mini_swe_agent
    --base-url {base_url} --exec-url {exec_url} --task-file {task_file}"."""
    timeout_s: float = Field(1800.0, gt=0)
    """Seconds the harness may run per episode before it is killed (the diff is graded anyway)."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables for the harness process."""
    log_dir: str | None = None
    """Keep each episode's harness output here (<instance_id>-<session>.log); None: keep only
    the tail of a failed run, in the trajectory's error."""
    tool_call_format: ToolCallFormatName = "auto"
    """How the model writes tool calls for a harness that sends `tools`: hermes, mistral,
    llama3_json, pythonic; auto: from the tokenizer's vocabulary."""

    @field_validator("command")
    @classmethod
    def _known_placeholders(cls, command: str) -> str:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(command) if name is not None]
        except ValueError as exc:
            raise ValueError(f"bad command template {command!r}: {exc}") from exc
        unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
        if unknown:
            raise ValueError(f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)} in the harness "
                             f"command; known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
        if not shlex.split(command):
            raise ValueError("the harness command is empty")
        return command


def harness_argv(command: str, values: dict[str, str]) -> list[str]:
    """Split the template first, then fill each word: a value with spaces stays one argument."""
    return [word.format(**values) for word in shlex.split(command)]


def _task_record(env: Any, task: Any, instance_id: str) -> dict[str, Any]:
    source = getattr(env, "task", None) or task
    return {
        "instance_id": instance_id,
        "problem_statement": str(getattr(source, "problem_statement", "") or ""),
        "repo": str(getattr(source, "repo", "") or ""),
        "workdir": str(getattr(source, "workdir", "") or ""),
    }


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Kill the harness and everything it started (its own process group)."""
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        await asyncio.wait_for(process.wait(), 10)
    except asyncio.TimeoutError:
        log.warning("harness process %d did not exit after SIGKILL", process.pid)


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text[-chars:]


async def run_harness_episode(env: Any, gateway: Any, settings: HarnessConfig, task: Any, *,
                              group_index: int = 0, timeout_s: float | None = None) -> list[Trajectory]:
    """Play one episode with the harness; returns its segments (one trajectory each), or one
    error trajectory when the harness never called the model. Raises only on cancellation."""
    started = time.monotonic()
    _, info = await env.areset(options={"task": task} if task is not None else None)
    instance_id = str(info.get("task_id") or getattr(task, "instance_id", task))

    async def execute(command: str, timeout: float | None, cwd: str | None) -> dict[str, Any]:
        return await env.arun_command(command, timeout=timeout, cwd=cwd)

    session = gateway.open_session(instance_id, executor=execute)
    try:
        limit = min(settings.timeout_s, timeout_s) if timeout_s is not None else settings.timeout_s
        reason, exit_code = "harness_exit", None
        with tempfile.TemporaryDirectory(prefix="agent-rl-harness-") as tmp:
            log_dir = Path(settings.log_dir) if settings.log_dir else Path(tmp)
            log_dir.mkdir(parents=True, exist_ok=True)
            log_path = log_dir / f"{instance_id}-{session.id[:8]}.log"
            task_file = Path(tmp) / "task.json"
            record = _task_record(env, task, instance_id)
            task_file.write_text(json.dumps(record), encoding="utf-8")
            values = {
                "base_url": gateway.base_url(session), "exec_url": gateway.exec_url(session),
                "session_url": f"{gateway.url}/s/{session.id}", "session": session.id, "model": gateway.model_name,
                "task_file": str(task_file), "instance_id": instance_id, "workdir": record["workdir"],
                "python": sys.executable, "log_dir": str(log_dir),
            }
            argv = harness_argv(settings.command, values)
            with open(log_path, "wb") as out:
                try:
                    process = await asyncio.create_subprocess_exec(
                        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                        start_new_session=True, env={**os.environ, **settings.env}, cwd=tmp)
                except OSError as exc:
                    gateway.sessions.pop(session.id)
                    await env.afinish("harness_failed")
                    return [Trajectory(task_id=instance_id, finish_reason="error", group_index=group_index,
                                       error=f"harness could not start: {argv[0]}: {exc}")]
                try:
                    exit_code = await asyncio.wait_for(process.wait(), limit)
                    reason = "harness_exit" if exit_code == 0 else "harness_failed"
                except asyncio.TimeoutError:
                    reason = "harness_timeout"
                    log.info("harness for %s ran past %gs: killed", instance_id, limit)
                finally:
                    await _stop(process)  # also on cancellation (a deadline cut): nothing outlives the episode
            gateway.sessions.close(session.id)  # a straggling call now gets 404, not a recording
            tail = _tail(log_path) if exit_code != 0 else ""
        harness_s = time.monotonic() - started
        _, reward, terminated, truncated, end = await env.afinish(reason)
        session = gateway.sessions.pop(session.id)
        timings = {"harness_s": round(harness_s, 4), "total_s": round(time.monotonic() - started, 4)}
        trajectories = session.trajectories(
            reward=reward, grade=end.get("grade") or {}, patch=str(end.get("patch") or ""), finish_reason=reason,
            terminated=bool(terminated), truncated=bool(truncated), group_index=group_index, timings=timings)
        if exit_code not in (0, None):
            log.warning("harness for %s exited with %s; output tail:\n%s", instance_id, exit_code, tail[-800:])
        if not trajectories:
            why = f"exit code {exit_code}" if exit_code is not None else f"killed after {limit:g}s"
            return [Trajectory(task_id=instance_id, finish_reason=reason, group_index=group_index,
                               grade=end.get("grade") or {}, patch=str(end.get("patch") or ""), timings=timings,
                               error=f"harness made no model calls ({why}); output tail: {tail[-1000:]}")]
        return trajectories
    finally:
        # Cancelled (a step cut on a Ray worker, a closing producer) or failed before the
        # recording was taken: drop the session, or a long-lived gateway (one per Ray
        # worker, the async producer's) would keep it for its whole life.
        gateway.sessions.discard(session.id)

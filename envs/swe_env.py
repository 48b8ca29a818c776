"""SWEEnv: one software-engineering task per episode, as a Gymnasium text environment.

An episode: `reset` starts a sandbox from the task's image (the repository at its base
commit, no hidden tests) and returns the problem statement plus how to act. Each `step`
takes the model's raw text, parses one action (a malformed one becomes an explanatory
observation, never an exception), runs it, and returns what it printed. Reward is 0.0
until the terminal step: `terminated` after a submit, `truncated` when turns, wall time
or the observation budget run out (or the caller ends the episode with `finish`). Either
way the agent's diff is graded in a fresh container and `info["grade"]` holds the report.

The core is synchronous (Gymnasium's API); `areset`/`astep`/`afinish`/`aclose` run it on
a worker thread so that one event loop can drive dozens of episodes at once.
"""
from __future__ import annotations

import functools
import posixpath
import shlex
import time
import uuid
from typing import Any, Callable, ClassVar, Literal, Mapping, Sequence, get_args

import gymnasium
from pydantic import Field, field_validator

from envs import file_actions
from envs.actions import (
    ACTION_FORMATS,
    Bash,
    Create,
    EditError,
    FormatError,
    StrReplace,
    Submit,
    View,
    format_instructions,
    parse_action,
)
from envs.episode_sandboxes import EpisodeSandboxes, SandboxFactory
from envs.grading import GradeReport, GradingConfig, grade
from envs.info import ResetInfo, StepInfo
from envs.task_images import task_image
from envs.tasks import Task, TaskError, TaskStore
from envs.text_space import text_space, to_space_text
from sandboxes.base import Sandbox, SandboxDied, cap_text
from sandboxes.docker import DockerSandboxConfig
from sandboxes.hosts import DockerHostConfig
from sandboxes.executor import run_blocking
from strictconfig import StrictModel

RewardKind = Literal["binary", "fraction"]
REWARD_KINDS: tuple[str, ...] = get_args(RewardKind)

DEFAULT_INSTRUCTIONS = """\
You are a software engineer working in the repository at {workdir}. Fix the issue below
so that the project's tests pass. Do not modify the tests.

<issue>
{problem_statement}
</issue>

{action_instructions}

You have at most {max_turns} turns."""


class EnvConfig(StrictModel):
    """One SWE episode's rules: action syntax, limits, reward, and the sandboxes it runs in."""

    config_where: ClassVar[str] = "env"

    action_format: Literal[ACTION_FORMATS] = "fenced"  # type: ignore[valid-type]
    """How the model writes actions: "fenced" blocks or "json" (see envs/actions.py)."""
    max_turns: int = Field(30, ge=1)
    """Steps before the episode is truncated."""
    max_time_s: float = Field(1800.0, gt=0)
    """Wall clock per episode, in seconds."""
    max_observation_chars: int = Field(8000, ge=1)
    """Per observation; longer output keeps its head and tail."""
    observation_budget: int = Field(200_000, ge=1)
    """Total observation characters per episode."""
    reward: RewardKind = "binary"
    """"binary" (1 if resolved, else 0) or "fraction" (partial credit: the fraction of FAIL_TO_PASS tests passing, 0 if any PASS_TO_PASS test fails)."""
    command_timeout_s: float | None = Field(None, gt=0)
    """Seconds per command; None: the task's exec_timeout_s."""
    sandbox: DockerSandboxConfig = Field(default_factory=DockerSandboxConfig)
    """The agent's container; its workdir follows the task unless set."""
    use_pool: bool = False
    """Pre-started containers per image (sandboxes.pool.SandboxPool)."""
    docker_hosts: list[DockerHostConfig] = Field(default_factory=list)
    """Docker engines to spread sandboxes over (unix://, tcp:// with TLS, ssh://); empty: the local engine."""
    pool_size: int = Field(2, ge=1)
    """Containers kept warm per image when use_pool is on."""
    instructions: str | None = None
    """First-observation template with {problem_statement} {action_instructions} {workdir} {max_turns}; None: the default."""
    grading: GradingConfig = Field(default_factory=GradingConfig)
    """How the final diff is graded."""

    @field_validator("instructions")
    @classmethod
    def _has_problem_statement(cls, value: str | None) -> str | None:
        if value is not None and "{problem_statement}" not in value:
            raise ValueError("must contain {problem_statement}")
        return value


# --------------------------------------------------------------------------------------
# The environment
# --------------------------------------------------------------------------------------


class SWEEnv(gymnasium.Env[str, str]):
    """One SWE task per episode; see the module docstring for the episode's shape.

    Args:
        tasks: a task spec for `TaskStore.from_spec` ("builtin", a path, a list of Tasks…).
        config: an `EnvConfig` or its keys.
        sandbox_factory: (image, task) -> Sandbox for the agent's workspace. Default: the
            env's own `EpisodeSandboxes` (pooled with `use_pool`), closed by `close()`. The
            episode runner passes its long-lived one here.
        grading_factory: (image, task) -> Sandbox for the grader; it must hand out a fresh,
            never-used container from the clean image each call. Default: `sandbox_factory`
            when one is given, else the env's own `EpisodeSandboxes.grader`.
        render_mode: None or "ansi" (`render()` returns the last observation).
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        tasks: Any = None,
        config: EnvConfig | Mapping[str, Any] | None = None,
        sandbox_factory: SandboxFactory | None = None,
        render_mode: str | None = None,
        grading_factory: SandboxFactory | None = None,
    ) -> None:
        self.config = EnvConfig.from_config(config)
        self.tasks = TaskStore.from_spec("builtin" if tasks is None else tasks)
        if not len(self.tasks):
            raise TaskError("SWEEnv needs at least one task")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = text_space()
        self.action_space = text_space()
        # Sandboxes the env made itself are its to close; a caller's factory belongs to the caller.
        self._own_sandboxes = EpisodeSandboxes.for_env(self.config) if sandbox_factory is None else None
        if self._own_sandboxes is not None:
            sandbox_factory = self._own_sandboxes.workspace
            grading_factory = grading_factory or self._own_sandboxes.grader
        self._sandbox_factory: SandboxFactory = sandbox_factory
        # A caller-supplied factory serves grading too unless told otherwise (same backend, same hardening).
        self._grading_factory: SandboxFactory = grading_factory or sandbox_factory
        self.task: Task | None = None
        self.sandbox: Sandbox | None = None
        self.image: str | None = None
        self.last_grade: GradeReport | None = None
        self._final_patch: str | None = None
        self._active = False
        self._turns = 0
        self._started = 0.0
        self._chars_seen = 0
        self._last_observation = ""

    # ---------------------------------------------------------------- Gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, ResetInfo]:
        """Start an episode: a new workspace sandbox with the task's repository at its base commit.

        Any previous episode's sandbox is released first (an unfinished episode is dropped
        ungraded). Builds the task's image on first use, which can take minutes.

        Args:
            seed: seeds `np_random`, which picks the task when `options` names none.
            options: {"task": task id or `Task`} picks the task; otherwise a random one.

        Returns:
            observation: the instructions: problem statement, how to act, the turn limit.
            info: `ResetInfo`: the task id and the episode's limits.

        Raises:
            TaskError: unknown task id; TaskImageError: the image could not be built;
            SandboxError: no container could be started.
        """
        super().reset(seed=seed)
        self._active = False
        self._release_sandbox()
        task = self._pick_task((options or {}).get("task"))
        self.task = task
        self.image = task_image(task)
        self.sandbox = self._sandbox_factory(self.image, task)
        self.last_grade = None
        self._final_patch = None
        self._active = True
        self._turns = 0
        self._chars_seen = 0
        self._started = time.monotonic()
        observation = to_space_text(self._instructions(task))
        self._last_observation = observation
        info: ResetInfo = {
            "task_id": task.instance_id,
            "max_turns": self.config.max_turns,
            "max_time_s": self.config.max_time_s,
            "max_observation_chars": self.config.max_observation_chars,
            "observation_budget": self.config.observation_budget,
            "action_format": self.config.action_format,
        }
        return observation, info

    def step(self, action: str) -> tuple[str, float, bool, bool, StepInfo]:
        """Parse one action from the model's raw text and run it in the workspace.

        A malformed action, a failed edit or a command error becomes the observation (the
        episode goes on); the step never raises for anything the model wrote.

        Args:
            action: the model's text for this turn; one action in `config.action_format`.

        Returns:
            observation: what the action printed (capped to `max_observation_chars`, head
                and tail kept), or the end-of-episode message.
            reward: 0.0 until the episode ends; then the grade's reward (`config.reward`).
            terminated: True after a submit (the agent chose to stop).
            truncated: True when a limit ended the episode (turns, wall time, observation
                budget) or the workspace died. On either end the patch was graded in a
                fresh container and `info["grade"]` holds the report.
            info: `StepInfo`.

        Raises:
            RuntimeError: no episode is running (call `reset` first).
        """
        self._require_active()
        self._turns += 1
        parsed = parse_action(action if isinstance(action, str) else str(action), self.config.action_format)
        info: StepInfo = {"turn": self._turns, "action": type(parsed).__name__}
        if isinstance(parsed, Submit):
            return self._end("submitted", terminated=True, info=info)
        if isinstance(parsed, FormatError):
            info["format_error"] = True
            output = parsed.message
        else:
            try:
                output = self._run_action(parsed)
            except SandboxDied as exc:
                # The workspace is gone (OOM, killed): nothing more can happen in this episode.
                info["sandbox_error"] = str(exc)
                return self._end("sandbox_died", terminated=False, info=info)
        observation = self._observe(output)
        reason = self._limit_reached()
        if reason:
            obs, reward, terminated, truncated, end_info = self._end(reason, terminated=False, info=info)
            return observation + "\n\n" + obs, reward, terminated, truncated, end_info
        return observation, 0.0, False, False, info

    def finish(self, reason: str = "truncated") -> tuple[str, float, bool, bool, StepInfo]:
        """End the episode from outside (e.g. the agent's context is full): graded, truncated.

        Returns what a truncating `step` returns, with `info["end_reason"] == reason`.

        Raises:
            RuntimeError: no episode is running.
        """
        self._require_active()
        return self._end(reason, terminated=False, info={"turn": self._turns})

    def render(self) -> str | None:
        """The last observation in "ansi" mode, else None."""
        return self._last_observation if self.render_mode == "ansi" else None

    def close(self) -> None:
        """Release the workspace; close the env's own sandbox pools (a caller's factory stays open)."""
        self._release_sandbox()
        if self._own_sandboxes is not None:
            self._own_sandboxes.close()
        self._active = False

    def run_command(self, command: str, *, timeout: float | None = None, cwd: str | None = None) -> dict[str, Any]:
        """Run one shell command in the workspace for an outside harness (agent_rl's gateway
        `/exec`): the harness drives its own loop, this env keeps the sandbox, the diff and the
        grading. The command gets the env's command timeout (at most `timeout`) and the time
        left in the episode; `cwd` is relative to the task's workdir.

        Returns {"output", "returncode", "timed_out"}. Raises SandboxDied when the workspace
        is gone, RuntimeError when no episode is running.
        """
        self._require_active()
        assert self.sandbox is not None
        limit = self._command_timeout()
        timeout = limit if timeout is None else max(1.0, min(float(timeout), limit))
        result = self.sandbox.exec(self._in_task_env(command), timeout=timeout,
                                   cwd=self._resolve(cwd) if cwd else None)
        return {"output": result.output, "returncode": result.exit_code, "timed_out": result.timed_out}

    # ---------------------------------------------------------------- async twins

    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, ResetInfo]:
        return await run_blocking(lambda: self.reset(seed=seed, options=options))

    async def astep(self, action: str) -> tuple[str, float, bool, bool, StepInfo]:
        return await run_blocking(lambda: self.step(action))

    async def afinish(self, reason: str = "truncated") -> tuple[str, float, bool, bool, StepInfo]:
        return await run_blocking(lambda: self.finish(reason))

    async def arun_command(self, command: str, *, timeout: float | None = None, cwd: str | None = None) -> dict[str, Any]:
        return await run_blocking(lambda: self.run_command(command, timeout=timeout, cwd=cwd))

    async def aclose(self) -> None:
        await run_blocking(self.close)

    # ---------------------------------------------------------------- the agent's diff

    def get_patch(self) -> str:
        """The agent's changes vs the base commit as a binary-safe git diff, new files included.

        Uses a throwaway index so the agent's own staging area is left alone, and disables
        hooks, fsmonitor and diff drivers that the agent could have configured."""
        if self.sandbox is None:
            if self._final_patch is not None:
                return self._final_patch
            raise RuntimeError("no episode: call reset() first")
        assert self.task is not None
        scratch = f"/tmp/agent-rl-diff-{uuid.uuid4().hex[:8]}"
        git = "git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.autocrlf=false"
        base = shlex.quote(self.task.base_commit)
        command = (
            f"cd {shlex.quote(self.task.workdir)} && "
            f"(cp .git/index {scratch}.index 2>/dev/null || true) && "
            f"GIT_INDEX_FILE={scratch}.index {git} add -A . && "
            f"GIT_INDEX_FILE={scratch}.index {git} diff --cached --binary --no-color --no-ext-diff "
            f"--no-textconv --full-index {base} > {scratch}.patch; status=$?; rm -f {scratch}.index; exit $status"
        )
        result = self.sandbox.exec(command, timeout=120)
        if not result.ok:
            raise RuntimeError(f"could not compute the agent's diff: {result.output.strip()[-500:]}")
        patch = self.sandbox.read_file(f"{scratch}.patch")
        self.sandbox.exec(f"rm -f {scratch}.patch", timeout=30)
        return patch

    # ---------------------------------------------------------------- internals

    def _pick_task(self, choice: Any) -> Task:
        if isinstance(choice, Task):
            return choice
        if isinstance(choice, str):
            return self.tasks.get(choice)
        if choice is not None:
            raise TaskError(f"options['task'] must be a task id or a Task, got {type(choice).__name__}")
        ids = self.tasks.ids()
        return self.tasks.get(ids[int(self.np_random.integers(len(ids)))])

    def _instructions(self, task: Task) -> str:
        template = self.config.instructions or DEFAULT_INSTRUCTIONS
        return template.format(
            problem_statement=task.problem_statement.strip(),
            action_instructions=format_instructions(self.config.action_format, workdir=task.workdir),
            workdir=task.workdir,
            max_turns=self.config.max_turns,
        )

    def _require_active(self) -> None:
        if not self._active or self.sandbox is None:
            raise RuntimeError("the episode is over (or never started): call reset() first")

    def _limit_reached(self) -> str | None:
        if self._turns >= self.config.max_turns:
            return "max_turns"
        if time.monotonic() - self._started >= self.config.max_time_s:
            return "max_time"
        if self._chars_seen >= self.config.observation_budget:
            return "observation_budget"
        return None

    def _observe(self, output: str) -> str:
        text, _ = cap_text(output, self.config.max_observation_chars)
        self._chars_seen += len(text)
        text = to_space_text(text)
        self._last_observation = text
        return text

    def _command_timeout(self) -> float:
        assert self.task is not None
        timeout = self.config.command_timeout_s or self.task.exec_timeout_s
        remaining = self.config.max_time_s - (time.monotonic() - self._started)
        return max(1.0, min(timeout, remaining))

    def _resolve(self, path: str) -> str:
        assert self.task is not None
        return posixpath.normpath(posixpath.join(self.task.workdir, path))

    def _run_action(self, action: Bash | View | Create | StrReplace) -> str:
        assert self.sandbox is not None
        try:
            if isinstance(action, Bash):
                return self._run_bash(action.command)
            if isinstance(action, View):
                return file_actions.view(self.sandbox, self._resolve(action.path), action.view_range)
            if isinstance(action, Create):
                return file_actions.create(self.sandbox, self._resolve(action.path), action.content)
            return file_actions.str_replace(self.sandbox, self._resolve(action.path), action.old, action.new)
        except EditError as exc:
            return f"Error: {exc}"
        except SandboxDied:
            raise
        except Exception as exc:  # a sandbox hiccup becomes an observation; the episode goes on
            return f"Error: {type(exc).__name__}: {exc}"

    def _in_task_env(self, command: str) -> str:
        """The command after the task's environment activation (e.g. conda's `testbed` in the
        official SWE-bench images), as the grader runs the tests: the agent sees what they see."""
        assert self.task is not None
        activate = self.task.env_activate.strip()
        return f"{activate}\n{command}" if activate else command

    def _run_bash(self, command: str) -> str:
        assert self.sandbox is not None
        timeout = self._command_timeout()
        result = self.sandbox.exec(self._in_task_env(command), timeout=timeout)
        parts = [result.output.rstrip("\n")] if result.output.strip() else []
        if result.timed_out:
            parts.append(f"[command timed out after {timeout:g}s and was killed]")
        parts.append(f"[exit code {result.exit_code}]")
        return "\n".join(parts)

    def _end(self, reason: str, *, terminated: bool, info: StepInfo) -> tuple[str, float, bool, bool, StepInfo]:
        assert self.task is not None and self.sandbox is not None
        try:
            patch = self.get_patch()
            patch_error = ""
        except Exception as exc:  # the agent may have broken git; grade an empty patch
            patch, patch_error = "", f"{type(exc).__name__}: {exc}"
        self._final_patch = patch
        self._release_sandbox()
        self._active = False
        report = grade(
            self.task,
            patch,
            config=self.config.grading,
            sandbox_factory=self._grading_factory,
            image=self.image,
        )
        self.last_grade = report
        reward = report.reward(self.config.reward)
        info = {
            **info,  # type: ignore[typeddict-item]
            "task_id": self.task.instance_id,
            "end_reason": reason,
            "grade": report.to_dict(),
            "patch": patch,
            "turns": self._turns,
            "elapsed_s": round(time.monotonic() - self._started, 3),
        }
        if patch_error:
            info["patch_error"] = patch_error
        message = "Submitted." if terminated else f"The episode ended ({reason})."
        observation = to_space_text(f"{message} Your changes were graded.")
        self._last_observation = observation
        return observation, float(reward), terminated, not terminated, info

    def _release_sandbox(self) -> None:
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            try:
                sandbox.close()
            except Exception:  # a dead container is already gone; nothing more to free
                pass


def make_env_fns(n: int, **kwargs: Any) -> Sequence[Callable[[], SWEEnv]]:
    """Constructors for gymnasium.vector.SyncVectorEnv/AsyncVectorEnv."""
    return [functools.partial(SWEEnv, **kwargs) for _ in range(n)]

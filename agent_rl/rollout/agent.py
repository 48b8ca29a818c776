"""The multi-turn agent loop: chat template ⇄ token ids ⇄ environment.

One episode: render the system and instance prompts, then repeat { generate from the exact
ids so far; step the env with the decoded reply; append the observation as the template's
token delta } until the env terminates (submit) or truncates (its own limits), or one of the
agent's limits runs out: turns, context tokens, wall clock, the episode's deadline. An
episode the agent stops is still graded by the env (`finish`), so overlong episodes stay in
the batch as negatives.

A `Deadline` (agent_rl/rollout/deadlines.py) is checked before each turn: no turn starts that
would leave less than its reserve for grading ("deadline", graded as usual). Whatever still
runs past it (a stuck command, a stalled grader) is cut, and the episode comes back truncated
with the failure reward and every token sampled so far (`grade["deadline"]`).

The trajectory holds every token the model saw or sampled, and `messages` mirrors it
exactly: the env's final observation (after submit or a limit) is never shown to the model,
so it is in neither.

Anything that breaks an episode (an engine error, a dead sandbox, template drift) becomes a
`Trajectory` with `error` set; `run_episode` does not raise for those.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from pydantic import Field

from agent_rl.rollout.chat_template import ChatTokenizer, TemplateDriftError, TokenConversation, probe_template
from agent_rl.rollout.deadlines import Deadline
from agent_rl.engines.base import Engine, EngineError, Generation, SamplingParams, Temperature, TopP
from agent_rl.engines.capabilities import wants_messages
from agent_rl.rollout.prompts import PromptConfig, PromptTemplates, initial_messages, observation_message
from agent_rl.rollout.trajectory import Trajectory
from strictconfig import StrictModel

log = logging.getLogger(__name__)

StepResult = tuple[str, float, bool, bool, dict[str, Any]]


class AgentEnv(Protocol):
    """What the loop needs from an environment (envs.swe_env.SWEEnv provides it)."""

    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]: ...

    async def astep(self, action: str) -> StepResult: ...


class SamplingConfig(StrictModel):
    """How the agent samples. arXiv 2508.03501: temperature 1.0 with every other filter off,
    so behaviour logprobs are those of the policy the trainer optimizes."""

    config_where: ClassVar[str] = "sampling"

    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    seed: int | None = None
    """Per-episode seeds derive from it (episode seed, turn); None: unseeded."""


class AgentConfig(StrictModel):
    """The agent loop's limits, sampling and prompts."""

    config_where: ClassVar[str] = "agent"

    max_turns: int = Field(10, ge=1)
    """Model replies per episode before the agent stops it (the env has its own limit)."""
    max_total_tokens: int = Field(4096, ge=1)
    """Context budget: prompt plus every turn so far."""
    max_tokens_per_turn: int = Field(512, ge=1)
    """Most tokens sampled per reply."""
    max_wall_s: float = Field(900.0, gt=0)
    """Wall clock per episode, in seconds."""
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    observation_role: Literal["user", "tool"] = "user"
    """Chat role of observations: "tool" for templates with a tool role."""
    stop: list[str] = Field(default_factory=list)
    """Extra stop strings besides the model's EOS."""
    verify_rerender: bool = True
    """Re-render each finished conversation and refuse template drift."""

    def templates(self) -> PromptTemplates:
        return self.prompts.resolve()


def check_template(tokenizer: ChatTokenizer, config: AgentConfig) -> None:
    """Start-up probe: refuse a chat template that would make trajectories drift."""
    templates = config.templates()
    probe_template(tokenizer, templates.system or None, role=config.observation_role)


async def finish_episode(env: Any, reason: str) -> StepResult:
    """Ask the env to end the episode early (truncated) and grade what the agent left."""
    if hasattr(env, "afinish"):
        return await env.afinish(reason)
    if hasattr(env, "finish"):
        return await asyncio.to_thread(env.finish, reason)
    raise TypeError(f"{type(env).__name__} has no finish(reason)/afinish(reason): cannot grade a truncated episode")


@dataclass
class _Clock:
    start: float = field(default_factory=time.monotonic)
    generation_s: float = 0.0
    env_s: float = 0.0
    grading_s: float = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def as_dict(self) -> dict[str, float]:
        return {
            "generation_s": round(self.generation_s, 4),
            "env_s": round(self.env_s, 4),
            "grading_s": round(self.grading_s, 4),
            "total_s": round(self.elapsed(), 4),
        }


@dataclass
class _TurnClock:
    """One reply's timings, kept as the turn runs so that a deadline cut or an error in the middle
    of its step still reports what the turn took so far (a reply is recorded once appended)."""

    start: float = field(default_factory=time.monotonic)
    generation_s: float = 0.0
    step_start: float | None = None  # set when env.step begins; None for a reply never stepped
    env_s: float | None = None  # set when env.step returns
    end: float | None = None  # set when the turn is done (its observation appended)

    def generated(self) -> None:
        self.generation_s = time.monotonic() - self.start

    def step_begins(self) -> None:
        self.step_start = time.monotonic()

    def step_ends(self) -> float:
        """The step's seconds (also kept)."""
        assert self.step_start is not None
        self.env_s = time.monotonic() - self.step_start
        return self.env_s

    def done(self) -> None:
        self.end = time.monotonic()

    def as_dict(self) -> dict[str, float]:
        now = time.monotonic()
        env_s = self.env_s
        if env_s is None:  # a step still running (cut, error) counts up to now; none ran: 0
            env_s = now - self.step_start if self.step_start is not None else 0.0
        end = self.end if self.end is not None else now
        return {
            "generation_s": round(self.generation_s, 4),
            "env_s": round(env_s, 4),
            "total_s": round(end - self.start, 4),
        }


def _turn_seed(episode_seed: int | None, turn: int) -> int | None:
    # Distinct per turn, reproducible per episode: the same seed must not replay the same
    # sample stream at every turn.
    return None if episode_seed is None else (episode_seed * 1_000_003 + turn) % (2**31 - 1)


async def run_episode(
    env: AgentEnv,
    engine: Engine,
    tokenizer: ChatTokenizer,
    config: AgentConfig,
    *,
    task: Any = None,
    seed: int | None = None,
    policy_version: int = 0,
    group_index: int = 0,
    deadline: Deadline | None = None,
) -> Trajectory:
    """Play one episode; always returns a Trajectory (with `error` set if it broke).

    Under `deadline` the episode stops before a turn that would not leave its reserve, and is
    cut where it stands once the deadline passes (`deadline.cut_by` then says by what); the
    caller owns the env and closes it after a cut (a blocked step may still hold it)."""
    clock = _Clock()
    deadline = deadline if deadline is not None else Deadline(None)
    episode = _Episode(env, engine, tokenizer, config, clock, seed=seed, deadline=deadline)
    task_id = _task_id(task)
    try:
        try:
            async with deadline.scope():
                return await episode.play(task, policy_version=policy_version, group_index=group_index)
        except TimeoutError:
            if not deadline.cut_by:
                raise  # a timeout of the episode's own making: an ordinary failure
            log.info("episode %s cut by the %s deadline during %s", episode.task_id or task_id, deadline.cut_by,
                     episode.phase)
            return episode.cut_trajectory(task_id, policy_version=policy_version, group_index=group_index)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # an episode must never take the batch down with it
        log.warning("episode %s failed: %s: %s", episode.task_id or task_id, type(exc).__name__, exc)
        return episode.error_trajectory(exc, task_id, policy_version=policy_version, group_index=group_index)


def _task_id(task: Any) -> str:
    if task is None:
        return ""
    return str(getattr(task, "instance_id", task))


class _Episode:
    def __init__(
        self,
        env: AgentEnv,
        engine: Engine,
        tokenizer: ChatTokenizer,
        config: AgentConfig,
        clock: _Clock,
        *,
        seed: int | None,
        deadline: Deadline | None = None,
    ) -> None:
        self.env, self.engine, self.tokenizer, self.config, self.clock = env, engine, tokenizer, config, clock
        self.deadline = deadline if deadline is not None else Deadline(None)
        self.phase = "reset"  # where a deadline cut finds the episode (reported in the cut's grade)
        self.slowest_turn_s = 0.0  # generation + env step: the next turn is assumed to take as long
        self.wants_messages = wants_messages(engine)  # declared by the engine (GeneratesFromMessages)
        self.templates = config.templates()
        self.seed = seed if seed is not None else config.sampling.seed
        self.conv: TokenConversation | None = None
        self.task_id = ""
        self.num_turns = 0
        self.text_mode = False
        self.token_versions: list[int] = []  # aligned with conv.response_ids as the episode goes
        self.turn_clocks: list[_TurnClock] = []  # one per reply appended, in order
        self.policy_version = 0

    async def play(self, task: Any, *, policy_version: int, group_index: int) -> Trajectory:
        self.policy_version = policy_version
        conv = await self._start(task)
        while True:
            limit = self._agent_limit_reached()
            if limit:
                return await self._finish_early(limit, policy_version, group_index)
            max_tokens = min(self.config.max_tokens_per_turn, self.config.max_total_tokens - len(conv))
            turn_clock = _TurnClock()
            generation = await self._generate(conv, max_tokens)
            turn_clock.generated()
            # No await from here to add_generation: a cut (a cancellation, only ever at an await)
            # finds the turn either not begun or wholly appended, never half.
            self._note_versions(conv, generation)
            turn = conv.add_generation(generation.token_ids, generation.logprobs)
            self.turn_clocks.append(turn_clock)
            self.num_turns += 1
            if generation.finish_reason == "length" and (
                max_tokens < self.config.max_tokens_per_turn or len(generation.token_ids) < max_tokens
            ):
                # Cut by the context (our budget or the engine's window), not by the per-turn
                # cap: acting on half a reply is noise, so the episode ends here, graded.
                turn_clock.done()  # the grading that follows is the episode's, not the turn's
                return await self._finish_early("context", policy_version, group_index)

            self.phase = "step"
            turn_clock.step_begins()
            observation, reward, terminated, truncated, info = await self.env.astep(turn.text)
            elapsed = turn_clock.step_ends()
            self.slowest_turn_s = max(self.slowest_turn_s, time.monotonic() - turn_clock.start)
            if terminated or truncated:
                # The terminal step is where the env grades: the episode counts it as grading,
                # the turn as its env step (what the step call took, grading included).
                turn_clock.done()
                self.clock.grading_s += elapsed
                reason = "submitted" if terminated else str(info.get("end_reason") or "env_limit")
                return self._trajectory(reward, terminated, truncated, reason, info, policy_version, group_index)
            self.clock.env_s += elapsed
            fits = self._add_observation(conv, observation)
            turn_clock.done()
            if not fits:
                return await self._finish_early("context", policy_version, group_index)

    async def _start(self, task: Any) -> TokenConversation:
        t = time.monotonic()
        self.phase = "reset"
        options = {"task": task} if task is not None else None
        observation, info = await self.env.areset(seed=self.seed, options=options)
        self.clock.env_s += time.monotonic() - t
        self.task_id = str(info.get("task_id") or _task_id(task))
        self.conv = TokenConversation.start(
            self.tokenizer, initial_messages(self.templates, observation, task_id=self.task_id)
        )
        return self.conv

    async def _generate(self, conv: TokenConversation, max_tokens: int) -> Generation:
        cfg = self.config
        sampling = SamplingParams(
            temperature=cfg.sampling.temperature,
            top_p=cfg.sampling.top_p,
            max_tokens=max_tokens,
            stop=tuple(cfg.stop),
            seed=_turn_seed(self.seed, self.num_turns),
        )
        t = time.monotonic()
        self.phase = "generate"
        if self.wants_messages:
            # A chat-only server renders its own template from the messages; the result is
            # marked text_mode and never trained on.
            generation = await self.engine.generate(conv.ids, sampling, messages=list(conv.messages))
        else:
            generation = await self.engine.generate(conv.ids, sampling)
        self.clock.generation_s += time.monotonic() - t
        if generation.finish_reason in ("error", "abort"):
            raise EngineError(
                f"engine {self.engine.name} finished with {generation.finish_reason}: {generation.info}"
            )
        self.text_mode = self.text_mode or generation.text_mode
        return generation

    def _note_versions(self, conv: TokenConversation, generation: Generation) -> None:
        """Tag the tokens about to be appended with the weights that sampled them: the engine's
        own report where it gives one (the weights may have changed since the episode began),
        else the version the episode started under."""
        version = int(generation.info.get("policy_version", self.policy_version))
        self.token_versions += [-1] * (len(conv.response_ids) - len(self.token_versions))
        self.token_versions += [version] * len(generation.token_ids)

    def _versions(self, conv: TokenConversation) -> list[int]:
        return self.token_versions + [-1] * (len(conv.response_ids) - len(self.token_versions))

    def _add_observation(self, conv: TokenConversation, observation: str) -> bool:
        """Append the env's observation; False when it would leave no room for a reply."""
        cfg = self.config
        content = observation_message(
            self.templates, observation, turn=self.num_turns, turns_left=cfg.max_turns - self.num_turns
        )
        if len(conv) + len(conv.observation_delta(content, role=cfg.observation_role)) >= cfg.max_total_tokens:
            return False
        conv.add_observation(content, role=cfg.observation_role)
        return True

    def _agent_limit_reached(self) -> str:
        cfg = self.config
        assert self.conv is not None
        if self.num_turns >= cfg.max_turns:
            return "max_turns"
        if len(self.conv) >= cfg.max_total_tokens:
            return "context"
        if self.clock.elapsed() >= cfg.max_wall_s:
            return "time"
        if not self.deadline.leaves_room_for(self.slowest_turn_s):
            return "deadline"
        return ""

    async def _finish_early(self, reason: str, policy_version: int, group_index: int) -> Trajectory:
        t = time.monotonic()
        self.phase = "grading"
        _, reward, _, _, info = await finish_episode(self.env, reason)
        self.clock.grading_s += time.monotonic() - t
        return self._trajectory(reward, False, True, reason, info, policy_version, group_index)

    def _trajectory(
        self,
        reward: float,
        terminated: bool,
        truncated: bool,
        reason: str,
        info: dict[str, Any],
        policy_version: int,
        group_index: int,
    ) -> Trajectory:
        conv = self.conv
        assert conv is not None
        if self.config.verify_rerender:
            check = conv.verify()  # raises TemplateDriftError: the caller records an error trajectory
            if not check.token_exact:
                log.debug("episode %s: sampled tokens are not canonical (%s)", self.task_id, check.detail)
        grade = info.get("grade") or {}
        return Trajectory(
            task_id=self.task_id,
            prompt_ids=list(conv.prompt_ids),
            response_ids=list(conv.response_ids),
            loss_mask=list(conv.loss_mask),
            behaviour_logprobs=list(conv.logprobs),
            reward=float(reward),
            num_turns=self.num_turns,
            finish_reason=reason,
            terminated=bool(terminated),
            truncated=bool(truncated),
            policy_version=policy_version,
            group_index=group_index,
            messages=[dict(m) for m in conv.messages],
            grade=dict(grade) if isinstance(grade, dict) else {"report": grade},
            patch=str(info.get("patch") or ""),
            timings=self._timings(reason),
            text_mode=self.text_mode,
            token_versions=self._versions(conv),
            turn_timings=self._turn_timings(),
        )

    def _turn_timings(self) -> list[dict[str, float]]:
        return [c.as_dict() for c in self.turn_clocks]

    def _timings(self, reason: str) -> dict[str, float]:
        timings = self.clock.as_dict()
        if reason == "deadline":  # what the deadline allowed; its presence counts deadline endings
            timings["deadline_s"] = float(self.deadline.allowed_s or 0.0)
        return timings

    def cut_trajectory(self, task_id: str, *, policy_version: int, group_index: int) -> Trajectory:
        """The episode as the deadline found it: truncated, the failure reward, every token
        sampled so far (a reply still being generated is lost whole; see `play`)."""
        grade = {"deadline": True, "cut_by": self.deadline.cut_by, "phase": self.phase, "resolved": False}
        info = {"grade": grade, "end_reason": "deadline"}
        if self.conv is None:  # cut before the first observation: nothing was sampled
            return Trajectory(
                task_id=self.task_id or task_id, finish_reason="deadline", truncated=True,
                policy_version=policy_version, group_index=group_index, grade=grade,
                timings=self._timings("deadline"),
            )
        return self._trajectory(0.0, False, True, "deadline", info, policy_version, group_index)

    def error_trajectory(self, exc: BaseException, task_id: str, *, policy_version: int, group_index: int) -> Trajectory:
        conv = self.conv
        kind = "template_drift" if isinstance(exc, TemplateDriftError) else type(exc).__name__
        return Trajectory(
            task_id=self.task_id or task_id,
            prompt_ids=list(conv.prompt_ids) if conv else [],
            response_ids=list(conv.response_ids) if conv else [],
            loss_mask=list(conv.loss_mask) if conv else [],
            behaviour_logprobs=list(conv.logprobs) if conv else [],
            num_turns=self.num_turns,
            finish_reason="error",
            policy_version=policy_version,
            group_index=group_index,
            messages=[dict(m) for m in conv.messages] if conv else [],
            timings=self.clock.as_dict(),
            error=f"{kind}: {exc}",
            text_mode=self.text_mode,
            turn_timings=self._turn_timings(),
        )

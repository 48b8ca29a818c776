"""`Gateway`: the recording OpenAI-compatible server in front of one of our engines.

Run it in the event loop that owns the engine (`async with Gateway(...) as gateway`): the
trainer's harness rollouts start one per batch on loopback; `agent-rl gateway` runs one until
stopped. Sampling follows the run, not the client: temperature 1 and no truncation by default
(arXiv 2508.03501: behaviour logprobs must be the policy the trainer optimizes), whatever
temperature a harness sends, unless `client_sampling` is set.
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar

from aiohttp import web
from pydantic import Field

from agent_rl.engines.base import Engine, Generation, SamplingParams, Temperature, TopP
from agent_rl.gateway.app import build_app
from agent_rl.gateway.errors import ContextOverflow, RequestError, UpstreamError
from agent_rl.gateway.sessions import Executor, Session, SessionRegistry
from agent_rl.gateway.tool_calls import ToolCallFormatName, resolve_format, template_renders_tools
from strictconfig import StrictModel

log = logging.getLogger(__name__)


class GatewayConfig(StrictModel):
    """How the gateway samples and how much it lets a call ask for."""

    config_where: ClassVar[str] = "gateway"

    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    client_sampling: bool = False
    """Use the temperature/top_p each request sends instead of the run's (not for training: the
    behaviour policy would then differ from the one the trainer optimizes)."""
    max_tokens: int = Field(512, ge=1)
    """Tokens per call when the client does not say, and the most it may ask for."""
    max_context_tokens: int | None = Field(None, ge=16)
    """Prompt plus reply per call; None: the engine's context window (if it has one)."""
    tool_call_format: ToolCallFormatName = "auto"
    """How the model writes tool calls: hermes, mistral, llama3_json, pythonic; auto: from the
    tokenizer's vocabulary (agent_rl/gateway/tool_calls.py)."""


class Gateway:
    """Sessions + routes + one engine. `start` binds it (port 0: a free port), `stop` ends it."""

    STOP_GRACE_S = 5.0
    """How long `stop` lets requests in flight finish before cancelling them (aiohttp's default
    is 60 s). Their sessions are closed by then: an /exec still waiting on a sandbox that its
    episode's teardown destroyed (a step cut) would otherwise hold the stop for a minute."""

    def __init__(self, engine: Engine, tokenizer: Any, *, model_name: str = "agent-rl",
                 config: GatewayConfig | dict[str, Any] | None = None) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.config = GatewayConfig.from_config(config)
        self.sessions = SessionRegistry()
        self.template_has_tools = template_renders_tools(tokenizer)
        self.tool_format = resolve_format(self.config.tool_call_format, tokenizer)
        window = getattr(engine, "context_window", None)
        self.context_window: int | None = self.config.max_context_tokens or (window if isinstance(window, int) else None)
        self.url = ""
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen; returns the root URL (`http://host:port`)."""
        self._runner = web.AppRunner(build_app(self), handle_signals=False, access_log=None,
                                     shutdown_timeout=self.STOP_GRACE_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1] if self._runner.addresses else port
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        for session in self.sessions.all():
            session.closed = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "Gateway":
        if not self.url:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ sessions

    def open_session(self, task_id: str = "", executor: Executor | None = None) -> Session:
        return self.sessions.create(task_id, executor)

    def base_url(self, session: Session) -> str:
        """The OpenAI base URL a harness is given for this session."""
        return f"{self.url}/s/{session.id}/v1"

    def exec_url(self, session: Session) -> str:
        return f"{self.url}/s/{session.id}/exec"

    # ------------------------------------------------------------------ generation

    def sampling(self, body: dict[str, Any], prompt_tokens: int) -> SamplingParams:
        """The call's sampling: the run's settings, the client's max_tokens and stop within limits."""
        cfg = self.config
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        if asked is not None and (not isinstance(asked, int) or isinstance(asked, bool) or asked < 1):
            raise RequestError("max_tokens must be a positive integer", param="max_tokens")
        max_tokens = min(asked or cfg.max_tokens, cfg.max_tokens)
        if self.context_window is not None:
            room = self.context_window - prompt_tokens
            if room < 1:
                raise ContextOverflow(
                    f"This model's maximum context length is {self.context_window} tokens. However, your messages "
                    f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages.")
            max_tokens = min(max_tokens, room)
        stop = body.get("stop") or ()
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
            raise RequestError("stop must be a string or a list of strings", param="stop")
        temperature, top_p = cfg.temperature, cfg.top_p
        if cfg.client_sampling:
            try:
                temperature = float(body.get("temperature", temperature))
                top_p = float(body.get("top_p", top_p))
            except (TypeError, ValueError) as exc:
                raise RequestError(f"bad sampling parameter: {exc}", param="temperature") from exc
        try:
            return SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=tuple(stop))
        except ValueError as exc:
            raise RequestError(f"bad sampling parameter: {exc}", param="temperature") from exc

    async def generate(self, prompt_ids: list[int], body: dict[str, Any]) -> Generation:
        sampling = self.sampling(body, len(prompt_ids))
        try:
            generation = await self.engine.generate(prompt_ids, sampling)
        except Exception as exc:
            raise UpstreamError(f"the engine failed: {type(exc).__name__}: {exc}") from exc
        if generation.finish_reason in ("error", "abort") or generation.text_mode:
            why = "returned text, not token ids" if generation.text_mode else f"finished with {generation.finish_reason}"
            raise UpstreamError(f"the engine {why}: {generation.info}")
        return generation

    def version_of(self, generation: Generation) -> int:
        version = generation.info.get("policy_version")
        if version is None:
            version = getattr(self.engine, "policy_version", 0)
        return int(version or 0)

"""OpenAIEngine: an OpenAI-compatible HTTP server (vLLM, `agent-rl serve`) over aiohttp.

Token mode (training): POST /v1/completions with the prompt as token ids and vLLM's
`return_token_ids` / `return_tokens_as_token_ids`, so the exact sampled ids and their logprobs
come back. vLLM >= 0.10.2 puts `token_ids` on each choice; older versions only give the
"token_id:N" strings in `logprobs.tokens`; both are read.

Text mode (evaluation against servers that cannot return ids): the reply text is re-tokenized
locally, so the ids are not what the server sampled; `Generation.text_mode` is True and such
trajectories are never trained on. With `messages=` it uses /v1/chat/completions, otherwise
the decoded prompt goes to /v1/completions as text.

Transient failures (connection errors, 429, 5xx) are retried with exponential backoff inside
an overall deadline, then raise EngineError. A context-length rejection (HTTP 400) is a normal
finish: `finish_reason="length"` with no tokens.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Literal

import aiohttp

from agent_rl.engines.base import EngineError, Generation, SamplingParams

log = logging.getLogger(__name__)

CONTEXT_ERROR_MARKERS = ("maximum context length", "context length", "too many tokens",
                         "prompt is too long", "input is too long")
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class _Transient(Exception):
    """A failure worth retrying (the server may recover)."""


class ContextLengthExceeded(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def normalize_base_url(base_url: str) -> str:
    """Accept "http://host:port", ".../" or ".../v1"; return the URL without /v1."""
    url = base_url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url '{base_url}' must start with http:// or https://")
    return url


def error_message(body: Any, fallback: str) -> str:
    """The message from vLLM's {"error": {...}} or the older flat {"message": ...} body."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return fallback


def is_context_error(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in CONTEXT_ERROR_MARKERS)


def parse_token_choice(choice: dict[str, Any]) -> tuple[list[int], list[float]]:
    """Sampled ids and logprobs from a completions choice, for both vLLM response dialects."""
    logprobs = choice.get("logprobs") or {}
    token_logprobs = logprobs.get("token_logprobs")
    token_ids = choice.get("token_ids")
    if token_ids is None:
        tokens = logprobs.get("tokens") or []
        if tokens and all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
            token_ids = [int(t.split(":", 1)[1]) for t in tokens]
    if token_ids is None:
        raise EngineError(
            "the server returned no token ids (needs vLLM >= 0.10.2 `return_token_ids` or "
            "`return_tokens_as_token_ids`); use mode='text' for servers that cannot"
        )
    if token_logprobs is None or len(token_logprobs) != len(token_ids):
        raise EngineError(
            f"the server returned {len(token_ids)} token ids but "
            f"{'no' if token_logprobs is None else len(token_logprobs)} logprobs"
        )
    return [int(t) for t in token_ids], [float(x) if x is not None else 0.0 for x in token_logprobs]


def finish_reason_of(choice: dict[str, Any]) -> str:
    reason = choice.get("finish_reason")
    return reason if reason in ("stop", "length", "abort") else ("length" if reason is None else "stop")


class OpenAIEngine:
    """An OpenAI-compatible server. Capabilities: generate (token ids in tokens mode; from
    `messages=` in text mode, see `wants_messages`), load checkpoint (`agent-rl serve`), close."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        tokenizer: Any = None,
        mode: Literal["tokens", "text"] = "tokens",
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        server: Literal["agent-rl", "vllm"] = "agent-rl",
    ) -> None:
        if server not in ("agent-rl", "vllm"):
            raise ValueError(f"server must be 'agent-rl' or 'vllm', got '{server}'")
        if mode not in ("tokens", "text"):
            raise ValueError(f"mode must be 'tokens' or 'text', got '{mode}'")
        if mode == "text" and tokenizer is None:
            raise ValueError("mode='text' needs a tokenizer to re-derive token ids from the reply")
        if timeout_s <= 0 or max_retries < 0:
            raise ValueError("timeout_s must be > 0 and max_retries >= 0")
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.tokenizer = tokenizer
        self.mode = mode
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self.policy_version = 0  # as last reported by the server after load_checkpoint
        self.server = server
        self._transfer_ready = False  # vllm: init_weight_transfer_engine done

    @property
    def wants_messages(self) -> bool:
        """GeneratesFromMessages: in text mode the server renders the chat from `messages=`."""
        return self.mode == "text"

    # ----- public API -------------------------------------------------------------------

    async def generate(
        self, prompt_ids: list[int], sampling: SamplingParams, *, messages: list[dict] | None = None
    ) -> Generation:
        if not prompt_ids:
            raise ValueError("prompt_ids is empty: a prompt needs at least one token")
        try:
            if self.mode == "tokens":
                return await self._generate_tokens(prompt_ids, sampling)
            return await self._generate_text(prompt_ids, sampling, messages)
        except ContextLengthExceeded as exc:
            return Generation([], [], "length", text="", text_mode=self.mode == "text",
                              info={"error": exc.message, "context_exceeded": True})

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def load_checkpoint(self, path: str, version: int | None = None) -> int:
        """Ask the server to load a trainer checkpoint (HF folder) or, for `agent-rl serve`, a
        LoRA adapter dir; returns the new policy version."""
        if self.server == "vllm":
            return await self._vllm_disk_update(str(path), version)
        payload: dict[str, Any] = {"path": str(path)}
        if version is not None:
            payload["version"] = int(version)
        body = await self._post("/v1/load_checkpoint", payload)
        self.policy_version = int(body["policy_version"])
        return self.policy_version

    async def _vllm_disk_update(self, path: str, version: int | None) -> int:
        """vLLM's native weight transfer with its shared-disk backend (`vllm serve ...
        --weight-transfer-config '{"backend": "disk"}'`, dev endpoints on): pause generation
        (in-flight requests finish first), start an update session, load the checkpoint
        folder, finish (layerwise post-processing), resume. The folder must be visible to the
        server at the same absolute path."""
        if not self._transfer_ready:
            await self._post("/init_weight_transfer_engine", {"init_info": {}})
            self._transfer_ready = True
        await self._post("/pause?mode=wait", {})
        try:
            await self._post("/start_weight_update", {"is_checkpoint_format": True})
            await self._post("/update_weights", {"update_info": {"path": path}})
            await self._post("/finish_weight_update", {})
        finally:
            await self._post("/resume", {})
        self.policy_version = self.policy_version + 1 if version is None else int(version)
        return self.policy_version

    async def health(self) -> bool:
        try:
            session = await self._get_session()
            async with session.get(f"{self.base_url}/health",
                                   timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    # ----- request building -------------------------------------------------------------

    def _sampling_fields(self, sampling: SamplingParams) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "model": self.model,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            # vLLM otherwise fills unset fields from the model's generation_config (often a
            # top_k), which would silently truncate the distribution the logprobs describe.
            "top_k": -1,
            "min_p": 0.0,
        }
        if sampling.seed is not None:
            fields["seed"] = sampling.seed
        if sampling.stop:
            fields["stop"] = list(sampling.stop)
        if sampling.stop_token_ids:
            fields["stop_token_ids"] = list(sampling.stop_token_ids)
        return fields

    async def _generate_tokens(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        payload = self._sampling_fields(sampling) | {
            "prompt": list(prompt_ids),
            "logprobs": 1,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
            "skip_special_tokens": False,
        }
        body = await self._post("/v1/completions", payload)
        choice = _first_choice(body)
        token_ids, logprobs = parse_token_choice(choice)
        return Generation(
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=finish_reason_of(choice),  # type: ignore[arg-type]
            text=choice.get("text"),
            info={"stop_reason": choice.get("stop_reason"), "usage": body.get("usage"),
                  "policy_version": body.get("policy_version")},
        )

    async def _generate_text(
        self, prompt_ids: list[int], sampling: SamplingParams, messages: list[dict] | None
    ) -> Generation:
        fields = self._sampling_fields(sampling)
        if messages is not None:
            body = await self._post("/v1/chat/completions", fields | {"messages": messages})
            choice = _first_choice(body)
            text = (choice.get("message") or {}).get("content") or ""
        else:
            prompt = self.tokenizer.decode(prompt_ids, skip_special_tokens=False)
            body = await self._post("/v1/completions", fields | {"prompt": prompt})
            choice = _first_choice(body)
            text = choice.get("text") or ""
        token_ids = self.tokenizer.encode(text, add_special_tokens=False)
        return Generation(
            token_ids=token_ids,
            logprobs=[0.0] * len(token_ids),  # unknown: text-mode output is never trained on
            finish_reason=finish_reason_of(choice),  # type: ignore[arg-type]
            text=text,
            text_mode=True,
            info={"stop_reason": choice.get("stop_reason"), "usage": body.get("usage")},
        )

    # ----- HTTP with retries --------------------------------------------------------------

    async def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        # A session belongs to the loop it was made in; trainers that call asyncio.run per
        # step get a new one instead of a "attached to a different loop" error.
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(headers=self._headers)
            self._session_loop = loop
        return self._session

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EngineError(f"POST {path}: no answer within {self.timeout_s:.0f}s")
            try:
                return await self._post_once(path, payload, remaining)
            except _Transient as exc:
                if attempt >= self.max_retries:
                    raise EngineError(f"POST {self.base_url}{path} failed after "
                                      f"{attempt + 1} attempt(s): {exc}") from exc
                delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                delay *= 0.5 + random.random() / 2  # jitter: concurrent episodes spread out
                if time.monotonic() + delay >= deadline:
                    raise EngineError(f"POST {self.base_url}{path}: gave up at the "
                                      f"{self.timeout_s:.0f}s deadline: {exc}") from exc
                log.warning("POST %s failed (%s); retry %d in %.2fs", path, exc, attempt + 1, delay)
                await asyncio.sleep(delay)
                attempt += 1

    async def _post_once(self, path: str, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        session = await self._get_session()
        try:
            async with session.post(f"{self.base_url}{path}", json=payload,
                                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                try:
                    body = await resp.json(content_type=None)
                except (aiohttp.ContentTypeError, ValueError):
                    body = None
                if resp.status == 200 and isinstance(body, dict):
                    return body
                message = error_message(body, f"HTTP {resp.status} {resp.reason}")
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        if resp.status in RETRY_STATUSES:
            raise _Transient(f"HTTP {resp.status}: {message}")
        if resp.status == 400 and is_context_error(message):
            raise ContextLengthExceeded(message)
        if resp.status == 200:
            raise EngineError(f"POST {path}: response is not a JSON object")
        raise EngineError(f"POST {path}: HTTP {resp.status}: {message}")


def _first_choice(body: dict[str, Any]) -> dict[str, Any]:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise EngineError(f"response has no choices: {str(body)[:200]}")
    return choices[0]

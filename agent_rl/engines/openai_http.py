"""OpenAIEngine: an OpenAI-compatible HTTP server over aiohttp: vLLM, `agent-rl serve`, or any
other (llama.cpp, TGI, a hosted API) in text mode.

Token mode (training): POST /v1/completions with the prompt as token ids and vLLM's
`return_token_ids` / `return_tokens_as_token_ids`, so the exact sampled ids and their logprobs
come back. vLLM >= 0.10.2 puts `token_ids` on each choice; older versions only give the
"token_id:N" strings in `logprobs.tokens`; both are read.

Text mode (evaluation against servers that cannot return ids): the reply text is re-tokenized
locally, so the ids are not what the server sampled; `Generation.text_mode` is True and such
trajectories are never trained on. With `messages=` it uses /v1/chat/completions, otherwise
the decoded prompt goes to /v1/completions as text.

Which fields go to which server (`server`). vLLM's extensions (`EXTENSION_FIELDS`: token-id
prompts, `return_token_ids`, `return_tokens_as_token_ids`, `skip_special_tokens`,
`stop_token_ids`, `top_k=-1`, `min_p=0`) are sent only to a server known to take them:

- `vllm`, `agent-rl`: said by the config; no probe.
- `auto` (the config default): `connect()` runs once before the first request.
  GET /v1/models: an `owned_by` of "vllm" or "agent-rl" names the server. Otherwise, in
  token mode, one probe completion (one token id in, one token out, the extensions on) must
  come back with token ids and logprobs (a vLLM-compatible server behind another name); if it
  does not, every request fails at once with a message naming `mode=text`. In text mode an
  unidentified server is `generic`.
- `generic`: standard OpenAI fields only (`stop_token_ids` become `stop` strings); text
  mode only.
`extra_body` is merged into every generation request as given (e.g. llama.cpp's own
`top_k: 0, min_p: 0, repeat_penalty: 1.0`, whose defaults otherwise truncate sampling).

Failures. Transient ones (connection errors, timeouts, 408, 429, 500/502/503/504 whose body
is not a validation error) are retried with exponential backoff inside an overall deadline,
then raise EngineError. A request the server will never accept (any other 4xx; a 5xx whose
body reads as a validation / unsupported-parameter error; other 5xx) raises `ServerRefused`
at once, naming the field the server rejected and the setting to change. A context-length
rejection is a normal finish: `finish_reason="length"` with no tokens. Errors and logs carry
at most `BODY_LOG_CHARS` of any body (servers echo the request, token ids and all).
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from typing import Any, Literal, Mapping

import aiohttp

from agent_rl.engines.base import EngineError, Generation, SamplingParams

log = logging.getLogger(__name__)

ServerKind = Literal["auto", "agent-rl", "vllm", "generic"]
SERVER_KINDS: tuple[str, ...] = ("auto", "agent-rl", "vllm", "generic")
# What `owned_by` in GET /v1/models says for the servers known to take vLLM's extensions.
KNOWN_OWNERS = {"vllm": "vllm", "agent-rl": "agent-rl"}
# Request fields only vLLM (and `agent-rl serve`, which speaks its dialect) accepts; a token-id
# `prompt` is one too.
EXTENSION_FIELDS = ("top_k", "min_p", "return_token_ids", "return_tokens_as_token_ids",
                    "skip_special_tokens", "stop_token_ids")
BODY_LOG_CHARS = 500  # the most of a request or response body an error or a log line carries
PROBE_PROMPT = [0]  # token 0 exists in every vocabulary

CONTEXT_ERROR_MARKERS = ("maximum context length", "context length", "too many tokens",
                         "prompt is too long", "input is too long", "exceed context window",
                         "exceeds the available context size")
# Retried whatever the body says (the server may recover) ...
TRANSIENT_STATUSES = frozenset({408, 429})
# ... and retried unless the body says the request itself is wrong.
TRANSIENT_5XX = frozenset({500, 502, 503, 504})
VALIDATION_MARKERS = (
    "validation error", "validationerror", "input should be", "field required", "extra inputs are not permitted",
    "extra_forbidden", "unrecognized request argument", "unrecognized field", "unknown field", "unknown parameter",
    "unexpected keyword argument", "unsupported parameter", "unsupported value", "not supported", "is not allowed",
    "invalid_request_error", "value is not a valid", "'loc':", '"loc":',
)


class _Transient(Exception):
    """A failure worth retrying (the server may recover)."""


class BadResponse(EngineError):
    """HTTP 200 whose body is not a JSON object."""


class ContextLengthExceeded(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServerRefused(EngineError):
    """The server rejected a request it will keep rejecting: not retried. `fields` are the
    request fields the server named; the message ends with what to change."""

    def __init__(self, message: str, *, status: int | None = None, fields: tuple[str, ...] = (),
                 hint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.fields = fields
        self.hint = hint


def cap(text: Any, limit: int = BODY_LOG_CHARS) -> str:
    """`text` on one line, cut to `limit` characters, saying how much was cut."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more chars]"


def normalize_base_url(base_url: str) -> str:
    """Accept "http://host:port", ".../" or ".../v1"; return the URL without /v1."""
    url = base_url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url '{base_url}' must start with http:// or https://")
    return url


def error_message(body: Any, fallback: str) -> str:
    """The message from vLLM's {"error": {...}}, the older flat {"message": ...}, or FastAPI's
    {"detail": ...} body."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        if body.get("detail"):
            detail = body["detail"]
            return detail if isinstance(detail, str) else json.dumps(detail)
    return fallback


def is_context_error(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in CONTEXT_ERROR_MARKERS)


def is_validation_error(message: str) -> bool:
    """True when an error body says the request itself is invalid (a 5xx that says so is not
    worth retrying: llama-cpp-python answers a schema violation with HTTP 500)."""
    lowered = message.lower()
    return any(marker in lowered for marker in VALIDATION_MARKERS)


_LOC = re.compile(r"""['"]loc['"]\s*:\s*[(\[]([^)\]]*)[)\]]""")


def error_param(body: Any) -> str | None:
    """The `param` an OpenAI-style error body names ({"error": {"param": "top_k", ...}})."""
    inner = body.get("error") if isinstance(body, dict) else None
    param = inner.get("param") if isinstance(inner, dict) else None
    return param if isinstance(param, str) and param else None


def rejected_fields(message: str, payload: Mapping[str, Any], param: str | None = None) -> tuple[str, ...]:
    """The request fields an error names: its `param`, else pydantic/FastAPI `loc`s, else the
    payload keys its message mentions as words ("model" only in a "model ... does not exist"
    or "not found" message: "this model" is prose)."""
    head = message[:1_000_000]  # an echoed body can be megabytes
    found: list[str] = []
    if param is not None:
        top = re.split(r"[.\[]", param, maxsplit=1)[0]
        if top in payload:
            found.append(top)
    located = False
    for match in _LOC.finditer(head):
        parts = [p.strip(" '\"") for p in match.group(1).split(",")]
        parts = [p for p in parts if p and p != "body"]
        located = True
        if parts and parts[0] in payload and parts[0] not in found:
            found.append(parts[0])
    if located:
        return tuple(found)
    lowered = head.lower()
    for key in payload:
        if key in found or (key == "model" and not ("does not exist" in lowered or "not found" in lowered)):
            continue
        if re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", head):
            found.append(key)
    return tuple(found)


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


# Request fields that come from a setting of the run, for "what to change".
SAMPLING_SETTINGS = {"temperature": "agent.sampling.temperature (--temperature)",
                     "top_p": "agent.sampling.top_p", "max_tokens": "agent.max_tokens_per_turn",
                     "stop": "agent.stop"}
TEXT_MODE_HINT = "evaluate with engine.mode=text (--engine-opt mode=text; text-mode samples are never trained on)"


class OpenAIEngine:
    """An OpenAI-compatible server. Capabilities: generate (token ids in tokens mode; from
    `messages=` in text mode, see `wants_messages`), load checkpoint (`agent-rl serve`, vLLM),
    close.

    `server` defaults to "agent-rl" here, for the callers that talk to a server of this
    project (the Ray workers, benchmarks); `engine.server` in the configs defaults to "auto".
    """

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
        server: ServerKind = "agent-rl",
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        if server not in SERVER_KINDS:
            raise ValueError(f"server must be one of {', '.join(map(repr, SERVER_KINDS))}, got '{server}'")
        if mode not in ("tokens", "text"):
            raise ValueError(f"mode must be 'tokens' or 'text', got '{mode}'")
        if mode == "text" and tokenizer is None:
            raise ValueError("mode='text' needs a tokenizer to re-derive token ids from the reply")
        if server == "generic" and mode == "tokens":
            raise ValueError("server 'generic' is sent standard OpenAI fields only, and token mode needs vLLM's "
                             "token-id extensions: use mode='text' (evaluation only), or server 'auto' or 'vllm'")
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
        self.extra_body = dict(extra_body or {})
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One pooled session per event loop that calls the engine: in async RL the producer's
        # loop and the trainer's both do, and a session only works in the loop that made it.
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self.policy_version = 0  # as last reported by the server after load_checkpoint
        self.server = server  # as configured
        # What serves base_url ("agent-rl", "vllm", "generic"; None until `connect`) and
        # whether it takes vLLM's extensions.
        self.server_kind: str | None = None if server == "auto" else server
        self.extensions = server in ("agent-rl", "vllm")
        self.served_models: list[str] = []  # from GET /v1/models, when asked
        self._refusal: ServerRefused | None = None  # connect's verdict, repeated to every request
        self._connect_lock: asyncio.Lock | None = None
        self._connect_loop: asyncio.AbstractEventLoop | None = None
        self._transfer_ready = False  # vllm: init_weight_transfer_engine done

    @property
    def wants_messages(self) -> bool:
        """GeneratesFromMessages: in text mode the server renders the chat from `messages=`."""
        return self.mode == "text"

    # ----- public API -------------------------------------------------------------------

    async def connect(self) -> str:
        """Find out (once) what serves `base_url` and whether it takes vLLM's extensions (see
        the module docstring); returns the server kind. Raises `ServerRefused` when token mode
        cannot work with this server, and again on every later call; EngineError when the
        server cannot be reached (asked again next time)."""
        if self._refusal is not None:
            raise self._refusal
        if self.server_kind is not None:
            return self.server_kind
        loop = asyncio.get_running_loop()
        if self._connect_lock is None or self._connect_loop is not loop:
            self._connect_lock, self._connect_loop = asyncio.Lock(), loop
        async with self._connect_lock:  # concurrent first requests probe once
            if self._refusal is None and self.server_kind is None:
                try:
                    self.server_kind = await self._detect()
                except ServerRefused as exc:
                    self._refusal = exc
        if self._refusal is not None:
            raise self._refusal
        assert self.server_kind is not None
        return self.server_kind

    async def generate(
        self, prompt_ids: list[int], sampling: SamplingParams, *, messages: list[dict] | None = None
    ) -> Generation:
        if not prompt_ids:
            raise ValueError("prompt_ids is empty: a prompt needs at least one token")
        await self.connect()
        try:
            if self.mode == "tokens":
                return await self._generate_tokens(prompt_ids, sampling)
            return await self._generate_text(prompt_ids, sampling, messages)
        except ContextLengthExceeded as exc:
            return Generation([], [], "length", text="", text_mode=self.mode == "text",
                              info={"error": exc.message, "context_exceeded": True})

    async def close(self) -> None:
        """Close every loop's session: this loop's here, a live other loop's in that loop."""
        here = asyncio.get_running_loop()
        for loop, session in list(self._sessions.items()):
            if loop is here:
                await self.release_session()
            elif loop.is_running() and not loop.is_closed():
                try:
                    done = asyncio.run_coroutine_threadsafe(session.close(), loop)
                    await asyncio.wait_for(asyncio.wrap_future(done), timeout=10)
                except (asyncio.TimeoutError, RuntimeError):  # that loop is going away: nothing to wait for
                    pass
            self._sessions.pop(loop, None)

    async def release_session(self) -> None:
        """Close the calling loop's session (a loop about to end calls this: a session left
        behind by a closed loop can no longer be closed)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None and not session.closed:
            await session.close()

    async def load_checkpoint(self, path: str, version: int | None = None) -> int:
        """Ask the server to load a trainer checkpoint (HF folder) or, for `agent-rl serve`, a
        LoRA adapter dir; returns the new policy version."""
        kind = await self.connect()
        if kind == "vllm":
            return await self._vllm_disk_update(str(path), version)
        if kind != "agent-rl":
            raise EngineError(f"cannot push weights to the server at {self.base_url}: it is neither vLLM nor "
                              "`agent-rl serve` by its /v1/models; set engine.server to vllm or agent-rl")
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

    # ----- what serves base_url -------------------------------------------------------------

    async def _detect(self) -> str:
        owner = await self._model_owner()
        if owner in KNOWN_OWNERS:
            self.extensions = True
            log.info("%s is %s (GET /v1/models): vLLM's extensions on", self.base_url, KNOWN_OWNERS[owner])
            return KNOWN_OWNERS[owner]
        if self.mode == "text":
            self.extensions = False
            log.info("%s is not vLLM or `agent-rl serve` (/v1/models owned_by %r): standard OpenAI fields only",
                     self.base_url, owner)
            return "generic"
        await self._probe_token_ids(owner)
        self.extensions = True
        log.info("%s (/v1/models owned_by %r) answered a token-id probe with token ids: vLLM's extensions on",
                 self.base_url, owner)
        return "generic"

    async def _model_owner(self) -> str | None:
        """`owned_by` of the served model (or of the first one) from GET /v1/models; None when
        the server has no such endpoint."""
        try:
            body = await self._request("GET", "/v1/models", None)
        except ServerRefused as exc:
            if exc.status in (401, 403):  # says "check engine.api_key"
                raise
            return None  # no such endpoint: an unidentified server
        except BadResponse:
            return None
        data = body.get("data")
        entries = [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
        self.served_models = [str(d.get("id")) for d in entries if d.get("id") is not None]
        if self.served_models and self.model not in self.served_models:
            log.warning("%s serves %s, not %r (engine.model); servers that check the name will refuse it",
                        self.base_url, cap(self.served_models, 200), self.model)
        mine = [d for d in entries if d.get("id") == self.model] or entries
        return str(mine[0].get("owned_by")) if mine and mine[0].get("owned_by") is not None else None

    async def _probe_token_ids(self, owner: str | None) -> None:
        """One token-id completion with the extensions on; ServerRefused unless token ids and
        logprobs come back."""
        payload = {"model": self.model, "prompt": list(PROBE_PROMPT), "max_tokens": 1, "temperature": 0.0,
                   "logprobs": 1, "return_token_ids": True, "return_tokens_as_token_ids": True,
                   "top_k": -1, "min_p": 0.0}
        who = (f"{self.base_url} is not vLLM or `agent-rl serve` (GET /v1/models "
               + (f"says owned_by {owner!r})" if owner else "does not say)"))
        try:
            body = await self._request("POST", "/v1/completions", payload, hint=False)
        except ServerRefused as exc:
            why = str(exc)
        except ContextLengthExceeded as exc:
            why = exc.message
        else:
            try:
                parse_token_choice(_first_choice(body))
                return
            except EngineError as exc:  # an answer without token ids or logprobs
                why = str(exc)
        raise ServerRefused(
            f"{who} and a token-id probe failed ({cap(why, 300)}): token mode needs token-id prompts and "
            f"vLLM's `return_token_ids`; {TEXT_MODE_HINT}, or set engine.server=vllm if it is a vLLM",
            hint=TEXT_MODE_HINT)

    # ----- request building -------------------------------------------------------------

    def _sampling_fields(self, sampling: SamplingParams) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "model": self.model,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if self.extensions:
            # vLLM otherwise fills unset fields from the model's generation_config (often a
            # top_k), which would silently truncate the distribution the logprobs describe.
            fields |= {"top_k": -1, "min_p": 0.0}
        if sampling.seed is not None:
            fields["seed"] = sampling.seed
        stop = list(sampling.stop)
        if sampling.stop_token_ids and not self.extensions:
            stop += [s for s in self._stop_strings(sampling.stop_token_ids) if s not in stop]
        if stop:
            fields["stop"] = stop
        if sampling.stop_token_ids and self.extensions:
            fields["stop_token_ids"] = list(sampling.stop_token_ids)
        return fields | self.extra_body

    def _stop_strings(self, token_ids: tuple[int, ...]) -> list[str]:
        """`stop_token_ids` as text, for servers that only take standard `stop` strings."""
        if self.tokenizer is None:
            return []
        texts = (self.tokenizer.decode([t], skip_special_tokens=False) for t in token_ids)
        return [t for t in texts if t]

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
        for ended in [other for other in self._sessions if other.is_closed()]:
            # Its loop is gone, and with it any way to close it: forget it (callers that run
            # asyncio.run per call should call release_session before their loop ends).
            self._sessions.pop(ended)
        session = self._sessions.get(loop)
        if session is None or session.closed:
            session = self._sessions[loop] = aiohttp.ClientSession(headers=self._headers)
        return session

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", path, payload)

    async def _request(self, method: str, path: str, payload: dict[str, Any] | None,
                       *, hint: bool = True) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EngineError(f"{method} {path}: no answer within {self.timeout_s:.0f}s")
            try:
                return await self._request_once(method, path, payload, remaining, hint)
            except _Transient as exc:
                if attempt >= self.max_retries:
                    raise EngineError(f"{method} {self.base_url}{path} failed after "
                                      f"{attempt + 1} attempt(s): {exc}") from exc
                delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                delay *= 0.5 + random.random() / 2  # jitter: concurrent episodes spread out
                if time.monotonic() + delay >= deadline:
                    raise EngineError(f"{method} {self.base_url}{path}: gave up at the "
                                      f"{self.timeout_s:.0f}s deadline: {exc}") from exc
                log.warning("%s %s failed (%s); retry %d in %.2fs", method, path, exc, attempt + 1, delay)
                await asyncio.sleep(delay)
                attempt += 1

    async def _request_once(self, method: str, path: str, payload: dict[str, Any] | None,
                            timeout_s: float, hint: bool) -> dict[str, Any]:
        session = await self._get_session()
        try:
            async with session.request(method, f"{self.base_url}{path}", json=payload,
                                       timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                status, reason = resp.status, resp.reason
                raw = await resp.read()
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
            raise _Transient(f"{type(exc).__name__}: {cap(exc)}") from exc
        text = raw.decode("utf-8", errors="replace")
        try:
            body = json.loads(text) if text.strip() else None
        except ValueError:
            body = None
        if status == 200:
            if isinstance(body, dict):
                return body
            raise BadResponse(f"{method} {path}: the response is not a JSON object: {cap(text)}")
        message = error_message(body, f"HTTP {status} {reason}" + (f": {text}" if text.strip() else ""))
        if status in TRANSIENT_STATUSES:
            raise _Transient(f"HTTP {status}: {cap(message)}")
        if (400 <= status < 500 or status == 500) and is_context_error(message):
            raise ContextLengthExceeded(cap(message))
        if status in TRANSIENT_5XX and not is_validation_error(message):
            raise _Transient(f"HTTP {status}: {cap(message)}")
        raise self._refused(method, path, status, message, error_param(body), payload or {}, hint)

    def _refused(self, method: str, path: str, status: int, message: str, param: str | None,
                 payload: Mapping[str, Any], with_hint: bool) -> ServerRefused:
        fields = rejected_fields(message, payload, param)
        hint = self._hint(path, status, message, fields, payload) if with_hint else ""
        named = f" (it names {', '.join(fields)})" if fields else ""
        text = f"{method} {path}: HTTP {status}: the server refused the request{named}: {cap(message)}"
        return ServerRefused(text + (f" → {hint}" if hint else ""), status=status, fields=fields, hint=hint)

    def _hint(self, path: str, status: int, message: str, fields: tuple[str, ...],
              payload: Mapping[str, Any]) -> str:
        """What to change, for a refusal of `payload` naming `fields`."""
        extra = [f for f in fields if f in self.extra_body]
        if extra:
            return f"remove {', '.join(extra)} from engine.extra_body"
        token_prompt = isinstance(payload.get("prompt"), list)
        ext = [f for f in fields if f in EXTENSION_FIELDS or (f == "prompt" and token_prompt)]
        server_is = f" (engine.server is '{self.server}')" if self.server in KNOWN_OWNERS else ""
        if ext:
            names = ", ".join("a token-id prompt" if f == "prompt" else f for f in ext)
            if self.mode == "tokens":
                return (f"this server does not take {names}: token mode cannot use it; {TEXT_MODE_HINT}"
                        + (f" and engine.server=auto or generic{server_is}" if server_is else ""))
            return (f"this server does not take vLLM's {names}: set engine.server=generic (or auto) so that only "
                    f"standard OpenAI fields are sent{server_is}")
        if "model" in fields or (status == 404 and "model" in message.lower()):
            served = f" (the server serves {cap(self.served_models, 200)})" if self.served_models else ""
            return f"check engine.model / --model{served}"
        if status in (401, 403):
            return "check engine.api_key"
        if status in (404, 405, 501):
            return (f"the server has no {path}: check engine.base_url"
                    + ("; a chat-only server needs engine.mode=text" if path == "/v1/completions" else ""))
        settings = [SAMPLING_SETTINGS[f] for f in fields if f in SAMPLING_SETTINGS]
        if settings:
            return f"the server refused {', '.join(fields)}: change {', '.join(settings)}"
        if fields:
            return f"the server refused {', '.join(fields)}"
        sent = [k for k in EXTENSION_FIELDS if k in payload] + (["a token-id prompt"] if token_prompt else [])
        if sent and is_validation_error(message):
            return (f"the request carried vLLM's extensions ({', '.join(sent)}); if this server is not vLLM, "
                    f"set engine.server=auto or generic" + ("" if self.mode == "text" else f" and {TEXT_MODE_HINT}"))
        return ""


def _first_choice(body: dict[str, Any]) -> dict[str, Any]:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise EngineError(f"response has no choices: {cap(body, 200)}")
    return choices[0]

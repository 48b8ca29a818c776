"""HFEngine: HF transformers inference that batches concurrent requests.

Requests from many concurrent episodes land in one queue. A worker thread takes up to
`max_batch_size` of them (waiting at most `batch_wait_ms` for the batch to fill), left-pads
the prompts and decodes them together with a KV cache. Each row keeps its own temperature,
top_p, stop criteria, max_tokens and `torch.Generator`, so a fixed seed reproduces the same
tokens whether the request ran alone or in a batch (up to float noise between batch shapes).
Batching is continuous: a row that finishes is answered at once and dropped from the batch and
its cache, and a request that arrives while a batch runs is prefilled between two decode steps
and merged into it (its cache left-padded to the batch's length, masked out). Agent episodes
reach the engine out of step (one is in the env while another samples), so static batches ran
mostly half-empty. Models whose cache cannot be merged (sliding-window or hybrid layers) keep
static batches. vLLM remains the engine for throughput.

Logprobs follow the convention in `agent_rl.engines.sampling` (the trainer's rule too).

The engine shares `model` in-process with the trainer. Generation holds `weights_lock` for a
whole batch, so a batch never mixes two policy versions; the trainer updates weights inside
`with engine.weights_locked():` (or via `load_weights`) and then awaits `weights_changed`.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from agent_rl.engines.base import EngineError, Generation, SamplingParams
from agent_rl.engines.sampling import sample_next_token

log = logging.getLogger(__name__)


@dataclass
class _Request:
    prompt_ids: list[int]
    sampling: SamplingParams
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued_at: float = field(default_factory=time.monotonic)


@dataclass
class _Row:
    """Decoding state of one request inside a batch."""

    request: _Request
    generator: torch.Generator
    stop_token_ids: frozenset[int]
    max_new_tokens: int  # min(max_tokens, what the context window leaves)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    text: str | None = None
    started_at: float = 0.0
    answered: bool = False


@dataclass
class _Batch:
    """The running batch: rows aligned with the batch dimension of the KV cache; `attention`
    covers the cached positions, `positions` and `pending` are each row's next input."""

    rows: list[_Row]
    cache: Any
    attention: torch.Tensor
    positions: torch.Tensor
    pending: list[int]


def _joinable_cache(model: Any) -> bool:
    """Whether new rows can be merged into a running batch: needs the plain per-layer
    key/value cache (a sliding-window or hybrid cache is not merged; such models keep
    static batches)."""
    from transformers import DynamicCache

    config = getattr(model, "config", None)
    if config is None or not hasattr(DynamicCache, "from_legacy_cache"):
        return False
    if getattr(config, "cache_implementation", None) not in (None, "dynamic"):
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return False
    return not (getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True))


def _legacy(cache: Any) -> tuple:
    return cache.to_legacy_cache() if hasattr(cache, "to_legacy_cache") else cache


def _merge(a: _Batch, b: _Batch) -> _Batch:
    """One batch of `a`'s rows then `b`'s: the shorter cache is left-padded (masked out)."""
    from transformers import DynamicCache

    width = max(a.attention.shape[1], b.attention.shape[1])

    def pad(t: torch.Tensor, dim_from_end: int) -> torch.Tensor:
        missing = width - t.shape[-dim_from_end]
        return torch.nn.functional.pad(t, (0, 0) * (dim_from_end - 1) + (missing, 0)) if missing else t

    layers = tuple(
        tuple(torch.cat([pad(x, 2), pad(y, 2)], dim=0) for x, y in zip(la, lb))
        for la, lb in zip(_legacy(a.cache), _legacy(b.cache))
    )
    return _Batch(
        rows=a.rows + b.rows,
        cache=DynamicCache.from_legacy_cache(layers),
        attention=torch.cat([pad(a.attention, 1), pad(b.attention, 1)], dim=0),
        positions=torch.cat([a.positions, b.positions], dim=0),
        pending=a.pending + b.pending,
    )


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _last_logits_kwarg(model: Any) -> dict[str, int]:
    # Prefill needs only the last position's logits; computing all of them costs
    # batch x prompt_len x vocab floats (GBs for long agent prompts).
    params = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):  # renamed in transformers 4.50
        if name in params:
            return {name: 1}
    return {}


def _context_window(model: Any) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


class HFEngine:
    """Batching transformers engine. See the module docstring for the conventions.

    Capabilities: generate, score logprobs, receive weights (shared model, or a state dict
    into its own copy), close.
    """

    name = "hf"

    def __init__(
        self,
        model_or_spec: Any,
        tokenizer: Any = None,
        *,
        device: str | None = "cpu",
        dtype: Any = None,
        max_batch_size: int = 8,
        batch_wait_ms: float = 5.0,
        context_window: int | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if isinstance(model_or_spec, (str, os.PathLike)):
            from agent_rl.engines.models import load_model

            model, loaded_tokenizer = load_model(model_or_spec, device=device, dtype=dtype)
            tokenizer = tokenizer or loaded_tokenizer
        else:
            model = model_or_spec
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.context_window = context_window or _context_window(model)
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.eos_token_ids = _eos_ids(model, tokenizer)
        self._last_logits_only = _last_logits_kwarg(model)
        self.policy_version = 0
        self.weights_lock = threading.RLock()
        self._writers_lock = threading.Lock()
        self._writers_waiting = 0
        self._joinable = _joinable_cache(model)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._closed = False
        self._seed_source = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
        self.stats = {"batches": 0, "requests": 0, "max_batch": 0, "generated_tokens": 0}

    # ----- public API -------------------------------------------------------------------

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        self._check_prompt(prompt_ids)
        if sampling.stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer; this HFEngine was built without one")
        if self._closed:
            raise EngineError("HFEngine is closed")
        if self.context_window is not None and len(prompt_ids) >= self.context_window:
            return Generation(
                [], [], "length", text="",
                info={"reason": f"prompt has {len(prompt_ids)} tokens; context window is "
                                f"{self.context_window}", "policy_version": self.policy_version},
            )
        loop = asyncio.get_running_loop()
        request = _Request(list(prompt_ids), sampling, loop, loop.create_future())
        self._ensure_worker()
        self._queue.put(request)
        return await request.future

    async def close(self) -> None:
        self.close_sync()

    def close_sync(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout=60)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        # While a writer waits, a running batch admits no new requests, so it ends and lets the writer in.
        with self._writers_lock:
            self._writers_waiting += 1
        try:
            with self.weights_lock:
                yield
        finally:
            with self._writers_lock:
                self._writers_waiting -= 1

    @contextlib.contextmanager
    def weights_locked(self) -> Iterator[None]:
        """Hold while changing weights in place: no batch decodes meanwhile."""
        with self._writing():
            yield

    def weights_updated(self, version: int | None = None) -> int:
        """The trainer changed `model`'s weights in place; record the new policy version."""
        with self._writing():
            self.policy_version = self.policy_version + 1 if version is None else int(version)
            return self.policy_version

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], version: int | None = None) -> int:
        with self._writing():
            self.model.load_state_dict(state_dict, strict=True)
            return self.weights_updated(version)

    # The capability Protocols (engines/capabilities.py) are async; the weights lock waits for a
    # running batch, so the blocking work runs in a thread and the caller's loop stays free.
    async def weights_changed(self, version: int | None = None) -> int:
        """SharesModel: the shared model was updated in place; record the new policy version."""
        return await asyncio.to_thread(self.weights_updated, version)

    async def load_weights(self, state_dict: dict[str, torch.Tensor], version: int | None = None) -> int:
        """LoadsStateDict: copy a full state dict into this engine's model (strict keys)."""
        return await asyncio.to_thread(self.load_state_dict, state_dict, version)

    async def score_logprobs(self, prompt_ids: list[int], completion_ids: list[int], temperature: float = 1.0) -> list[float]:
        """ScoresLogprobs: `compute_logprobs` off the event loop."""
        return await asyncio.to_thread(self.compute_logprobs, prompt_ids, completion_ids, temperature)

    def compute_logprobs(
        self, prompt_ids: list[int], completion_ids: list[int], temperature: float = 1.0
    ) -> list[float]:
        """Teacher-forced logprobs of `completion_ids` after `prompt_ids` under the current
        weights, with the sampling convention (temperature 0 means unscaled)."""
        self._check_prompt(prompt_ids)
        if not completion_ids:
            return []
        ids = torch.tensor([list(prompt_ids) + list(completion_ids)], device=self.device)
        scale = temperature if temperature > 0 else 1.0
        with self.weights_lock, torch.inference_mode(), _eval_mode(self.model):
            logits = self.model(input_ids=ids, use_cache=False).logits[0].float()
        n = len(prompt_ids)
        predicting = logits[n - 1 : n - 1 + len(completion_ids)] / scale
        logprobs = torch.log_softmax(predicting, dim=-1)
        targets = torch.tensor(completion_ids, device=logprobs.device)
        return logprobs.gather(1, targets[:, None])[:, 0].tolist()

    # ----- batching ---------------------------------------------------------------------

    def _check_prompt(self, prompt_ids: list[int]) -> None:
        if not prompt_ids:
            raise ValueError("prompt_ids is empty: a prompt needs at least one token")
        bad = [t for t in prompt_ids if not isinstance(t, int) or not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(
                f"prompt_ids contains {len(bad)} id(s) outside [0, {self.vocab_size}), e.g. {bad[:3]}"
            )

    def _ensure_worker(self) -> None:
        with self._worker_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._worker_loop, name="hf-engine", daemon=True
                )
                self._worker.start()

    def _next_batch(self) -> list[_Request] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # keep the shutdown signal for the outer loop
                break
            batch.append(item)
        return batch

    def _worker_loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            batch = [r for r in batch if not r.future.cancelled()]
            if batch:
                self._run_session(batch)

    def _admit(self, active: int) -> list[_Request]:
        """Requests waiting in the queue that may join the running batch now: none while a
        weight update waits (it would otherwise starve behind a stream of new requests) or
        when joining is unsupported for this model's cache."""
        if self._writers_waiting or not self._joinable:
            return []
        taken: list[_Request] = []
        while active + len(taken) < self.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # keep the shutdown signal for the worker loop
                break
            if not item.future.cancelled():
                taken.append(item)
        return taken

    def _run_session(self, first: list[_Request]) -> None:
        """Decode `first` and every request that joins while it runs (continuous batching):
        between decode steps, waiting requests are prefilled and merged into the batch, and
        each row is answered the moment it finishes, so a short reply never waits for the
        batch's longest one. The session holds `weights_lock` throughout: one policy version."""
        session: list[_Row] = []
        try:
            with self.weights_lock, torch.inference_mode(), _eval_mode(self.model):
                version = self.policy_version
                batch: _Batch | None = None
                incoming = first
                while incoming or (batch is not None and batch.rows):
                    if incoming:
                        rows = [self._make_row(r) for r in incoming]
                        session += rows
                        joined = self._prefill(rows, version)
                        if batch is None or not batch.rows:
                            batch = joined
                        elif joined.rows:  # (rows that finished on their first token are answered already)
                            batch = _merge(batch, joined)
                        self.stats["batches"] += 1
                    if batch.rows:
                        self.stats["max_batch"] = max(self.stats["max_batch"], len(batch.rows))
                        self._step(batch, version)
                    incoming = self._admit(len(batch.rows))
        except Exception as exc:  # a failed forward fails these requests, never the engine
            log.exception("HFEngine batch of %d failed", len(session))
            error = EngineError(f"generation failed: {type(exc).__name__}: {exc}")
            for row in session:
                if not row.answered:
                    row.answered = True
                    _resolve(row.request, exception=error)

    def _make_row(self, request: _Request) -> _Row:
        sampling = request.sampling
        generator = torch.Generator(device=self.device if self.device.type == "cuda" else "cpu")
        if sampling.seed is not None:
            generator.manual_seed(int(sampling.seed))
        else:
            generator.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self._seed_source)))
        max_new = sampling.max_tokens
        if self.context_window is not None:
            max_new = min(max_new, self.context_window - len(request.prompt_ids))
        return _Row(
            request=request,
            generator=generator,
            stop_token_ids=self.eos_token_ids | frozenset(sampling.stop_token_ids),
            max_new_tokens=max_new,
            started_at=time.monotonic(),
        )

    def _prefill(self, rows: list[_Row], version: int) -> "_Batch":
        """Left-padded prefill of new rows; samples their first token."""
        lengths = [len(r.request.prompt_ids) for r in rows]
        width = max(lengths)
        input_ids = torch.zeros((len(rows), width), dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - lengths[i]:] = torch.tensor(row.request.prompt_ids)
            attention[i, width - lengths[i]:] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                         use_cache=True, **self._last_logits_only)
        batch = _Batch(rows=list(rows), cache=out.past_key_values, attention=attention,
                       positions=positions[:, -1:] + 1, pending=[])
        self._sample(batch, out.logits[:, -1, :], version)
        return batch

    def _step(self, batch: "_Batch", version: int) -> None:
        """One decode step for every row of `batch` (each feeds its pending token)."""
        attention = torch.cat([batch.attention, batch.attention.new_ones((len(batch.rows), 1))], dim=-1)
        out = self.model(
            input_ids=torch.tensor(batch.pending, device=self.device)[:, None],
            attention_mask=attention, position_ids=batch.positions,
            past_key_values=batch.cache, use_cache=True, **self._last_logits_only,
        )
        batch.cache, batch.attention, batch.positions = out.past_key_values, attention, batch.positions + 1
        self._sample(batch, out.logits[:, -1, :], version)

    def _sample(self, batch: "_Batch", last_logits: torch.Tensor, version: int) -> None:
        """Sample each row's next token; answer finished rows and drop them from the batch."""
        pending, keep = [], []
        for slot, row in enumerate(batch.rows):
            token, logprob = sample_next_token(
                last_logits[slot], row.request.sampling.temperature, row.request.sampling.top_p, row.generator)
            row.token_ids.append(token)
            row.logprobs.append(logprob)
            self._check_finished(row, token)
            if row.finish_reason is None:
                keep.append(slot)
                pending.append(token)
            else:
                self._answer(row, version, len(batch.rows))
        if len(keep) < len(batch.rows):
            index = torch.tensor(keep, device=self.device, dtype=torch.long)
            batch.cache = _select_rows(batch.cache, index) if keep else None
            batch.attention = batch.attention.index_select(0, index)
            batch.positions = batch.positions.index_select(0, index)
            batch.rows = [batch.rows[s] for s in keep]
        batch.pending = pending

    def _answer(self, row: _Row, version: int, batch_size: int) -> None:
        self.stats["requests"] += 1
        self.stats["generated_tokens"] += len(row.token_ids)
        row.answered = True
        _resolve(row.request, result=Generation(
            token_ids=row.token_ids,
            logprobs=row.logprobs,
            finish_reason=row.finish_reason or "length",  # type: ignore[arg-type]
            text=row.text if row.text is not None else self._decode_text(row.token_ids),
            info={
                "policy_version": version,
                "prompt_tokens": len(row.request.prompt_ids),
                "stop_reason": row.stop_reason,
                "batch_size": batch_size,
                "queue_s": row.started_at - row.request.enqueued_at,
                "decode_s": time.monotonic() - row.started_at,
            },
        ))

    def _check_finished(self, row: _Row, token: int) -> None:
        if token in row.stop_token_ids:
            row.finish_reason, row.stop_reason = "stop", token
            # The stop token itself is kept in token_ids (it was sampled and is trained on),
            # but not shown in text.
            row.text = self._decode_text(row.token_ids[:-1])
            return
        stops = row.request.sampling.stop
        if stops and self.tokenizer is not None:
            text = self._decode_text(row.token_ids)
            for stop in stops:
                at = text.find(stop)
                if at != -1:
                    # Tokens up to the one that completed the stop string stay (they were
                    # sampled); the text is cut before the stop string, as vLLM does.
                    row.finish_reason, row.stop_reason, row.text = "stop", stop, text[:at]
                    return
        if len(row.token_ids) >= row.max_new_tokens:
            row.finish_reason = "length"

    def _decode_text(self, token_ids: list[int]) -> str | None:
        if self.tokenizer is None:
            return None
        return self.tokenizer.decode(token_ids, skip_special_tokens=False)


def _select_rows(cache: Any, keep: torch.Tensor) -> Any:
    """Drop finished rows from the KV cache (DynamicCache or the legacy tuple format)."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(keep)
        return cache
    return tuple(tuple(t.index_select(0, keep) for t in layer) for layer in cache)


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    # The trainer may share this model in train mode; restore whatever mode it had.
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def _resolve(request: _Request, *, result: Generation | None = None,
             exception: BaseException | None = None) -> None:
    def apply() -> None:
        if request.future.done():
            return  # the caller gave up (cancelled) meanwhile
        if exception is not None:
            request.future.set_exception(exception)
        else:
            request.future.set_result(result)

    try:
        request.loop.call_soon_threadsafe(apply)
    except RuntimeError:
        pass  # the caller's event loop is closed; nobody is waiting any more

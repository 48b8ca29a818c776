"""HFEngine: HF transformers inference that batches concurrent requests.

Requests from many concurrent episodes land in one queue. A worker thread takes up to
`max_batch_size` of them (waiting at most `batch_wait_ms` for the batch to fill), left-pads
the prompts and decodes them together with a KV cache. Each row keeps its own temperature,
top_p, stop criteria, max_tokens and `torch.Generator`, so a fixed seed reproduces the same
tokens whether the request ran alone or in a batch (up to float noise between batch shapes).
Rows that finish are dropped from the batch and its cache. A request that arrives while a
batch runs waits for the next batch (static batching: simple, and enough for a CPU/small-GPU
engine; vLLM is the engine for throughput).

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
    def weights_locked(self) -> Iterator[None]:
        """Hold while changing weights in place: no batch decodes meanwhile."""
        with self.weights_lock:
            yield

    def weights_updated(self, version: int | None = None) -> int:
        """The trainer changed `model`'s weights in place; record the new policy version."""
        with self.weights_lock:
            self.policy_version = self.policy_version + 1 if version is None else int(version)
            return self.policy_version

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], version: int | None = None) -> int:
        with self.weights_lock:
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
            if not batch:
                continue
            try:
                results = self._run_batch(batch)
            except Exception as exc:  # a failed forward fails these requests, never the engine
                log.exception("HFEngine batch of %d failed", len(batch))
                error = EngineError(f"generation failed: {type(exc).__name__}: {exc}")
                for request in batch:
                    _resolve(request, exception=error)
                continue
            for request, generation in zip(batch, results):
                _resolve(request, result=generation)

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
        )

    def _run_batch(self, batch: list[_Request]) -> list[Generation]:
        started = time.monotonic()
        rows = [self._make_row(r) for r in batch]
        with self.weights_lock, torch.inference_mode(), _eval_mode(self.model):
            version = self.policy_version
            self._decode(rows)
        elapsed = time.monotonic() - started
        self.stats["batches"] += 1
        self.stats["requests"] += len(rows)
        self.stats["max_batch"] = max(self.stats["max_batch"], len(rows))
        self.stats["generated_tokens"] += sum(len(r.token_ids) for r in rows)
        return [
            Generation(
                token_ids=row.token_ids,
                logprobs=row.logprobs,
                finish_reason=row.finish_reason or "length",  # type: ignore[arg-type]
                text=row.text if row.text is not None else self._decode_text(row.token_ids),
                info={
                    "policy_version": version,
                    "prompt_tokens": len(row.request.prompt_ids),
                    "stop_reason": row.stop_reason,
                    "batch_size": len(rows),
                    "queue_s": started - row.request.enqueued_at,
                    "decode_s": elapsed,
                },
            )
            for row in rows
        ]

    def _decode(self, rows: list[_Row]) -> None:
        """Left-padded batched decoding with a KV cache; fills each row's tokens in place."""
        lengths = [len(r.request.prompt_ids) for r in rows]
        width = max(lengths)
        pad = 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - lengths[i] :] = torch.tensor(row.request.prompt_ids)
            attention[i, width - lengths[i] :] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)

        active = list(range(len(rows)))  # indices into rows, aligned with the batch dimension
        cache = None
        step_input, step_positions = input_ids, positions
        while active:
            out = self.model(
                input_ids=step_input,
                attention_mask=attention,
                position_ids=step_positions,
                past_key_values=cache,
                use_cache=True,
                **self._last_logits_only,
            )
            cache = out.past_key_values
            last_logits = out.logits[:, -1, :]
            next_tokens = []
            still_active = []
            for slot, index in enumerate(active):
                row = rows[index]
                token, logprob = sample_next_token(
                    last_logits[slot], row.request.sampling.temperature,
                    row.request.sampling.top_p, row.generator,
                )
                row.token_ids.append(token)
                row.logprobs.append(logprob)
                self._check_finished(row, token)
                next_tokens.append(token)
                if row.finish_reason is None:
                    still_active.append(slot)
            if not still_active:
                break
            keep = torch.tensor(still_active, device=self.device)
            if len(still_active) < len(active):
                cache = _select_rows(cache, keep)
                attention = attention.index_select(0, keep)
                step_positions = step_positions.index_select(0, keep)
            next_ids = torch.tensor(next_tokens, device=self.device).index_select(0, keep)
            step_input = next_ids[:, None]
            step_positions = step_positions[:, -1:] + 1
            attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=-1)
            active = [active[s] for s in still_active]

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

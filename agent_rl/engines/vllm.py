"""VLLMEngine: in-process vLLM (AsyncLLM), token in / token out, with weight updates.

Written against `vllm>=0.10.2,<0.34` (the V1 engine), checked against vLLM's source and
documentation, never run here (no GPU on the development machines; the GPU tests skip):
- weights: where the engine has vLLM's native weight transfer (`weight_transfer_config`,
  `init_weight_transfer_engine` / `update_weights` on the engine client), the trainer's GPU
  tensors go over its CUDA-IPC backend (colocated: same GPU, no copy through the host), inside
  pause_generation / resume_generation and, where the version has them, start/finish_weight_update;
  older versions take the worker-extension path below;
- prompts go in as `TokensPrompt(prompt_token_ids=...)`; `SamplingParams(logprobs=0)` returns
  the sampled token's logprob for every output token;
- vLLM >= 0.10.2 can report logprobs after temperature/top-p processing
  (`logprobs_mode="processed_logprobs"`), which is this project's convention; older versions
  report raw-logit logprobs, identical only at temperature 1 and top_p 1 (the RL default).
  `Generation.info["logprobs_mode"]` says which one a generation used;
- weights are pushed through a worker extension (`worker_extension_cls`) whose method runs
  `model_runner.model.load_weights` in every worker, called with `collective_rpc`; the prefix
  cache is reset afterwards so no KV computed under old weights is reused.

The module imports without vLLM; constructing the engine without it raises a clear error.
"""
from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any, Iterable

from agent_rl.engines.base import EngineError, Generation, SamplingParams

log = logging.getLogger(__name__)

INSTALL_HINT = "vLLM is not installed: pip install 'agent-rl[vllm]' (needs a CUDA GPU)"


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return vllm


class WeightSyncWorkerExtension:
    """Mixed into each vLLM worker (by dotted name), so `collective_rpc` can reach it."""

    def update_weights_from_tensors(self, named_tensors: list[tuple[str, Any]]) -> int:
        model = self.model_runner.model  # type: ignore[attr-defined]
        model.load_weights(weights=named_tensors)
        return len(named_tensors)


def _async_llm_class(vllm: Any) -> Any:
    try:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM
    except ImportError:
        return vllm.AsyncLLMEngine


def ipc_update_info(named_tensors: list[tuple[str, Any]], gpu_uuid: str) -> dict[str, Any]:
    """The IPC backend's update_info for CUDA tensors: names, dtype names, shapes and one
    {gpu uuid: handle} per tensor. The tensors must stay referenced until the update returns."""
    from torch.multiprocessing.reductions import reduce_tensor

    return {
        "names": [name for name, _ in named_tensors],
        "dtype_names": [str(t.dtype).split(".")[-1] for _, t in named_tensors],
        "shapes": [list(t.shape) for _, t in named_tensors],
        "ipc_handles": [{gpu_uuid: reduce_tensor(t)} for _, t in named_tensors],
    }


class VLLMEngine:
    """In-process vLLM. Capabilities: generate, receive weights (`update_weights`), close."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        enable_sleep_mode: bool = False,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> None:
        vllm = import_vllm()
        from agent_rl.engines.models import KNOWN_MODELS, resolve_checkpoint

        # vLLM loads HF checkpoints; our aliases resolve to the converted local checkpoint.
        model_path = str(resolve_checkpoint(model)) if model in KNOWN_MODELS else model
        args: dict[str, Any] = dict(
            model=model_path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_sleep_mode=enable_sleep_mode,
            seed=seed,
            worker_extension_cls=f"{__name__}.WeightSyncWorkerExtension",
            # Our sampling fields are complete; do not fill the rest from generation_config.json
            # (a model's default top_k would break the behaviour logprobs).
            generation_config="vllm",
        )
        known = {f.name for f in dataclasses.fields(vllm.AsyncEngineArgs)}
        self.native_transfer = "weight_transfer_config" in known
        if self.native_transfer:
            from vllm.config import WeightTransferConfig

            args["weight_transfer_config"] = WeightTransferConfig(backend="ipc")
        self._transfer_ready = False
        self.logprobs_mode = "raw_logprobs"
        if "logprobs_mode" in known:
            args["logprobs_mode"] = self.logprobs_mode = "processed_logprobs"
        args.update(engine_kwargs)
        unsupported = sorted(k for k in args if k not in known)
        for key in unsupported:
            if key in engine_kwargs:
                raise ValueError(f"vLLM {vllm.__version__} has no engine argument '{key}'")
            args.pop(key)  # optional features this vLLM version lacks
        self._vllm = vllm
        self.engine = _async_llm_class(vllm).from_engine_args(vllm.AsyncEngineArgs(**args))
        self.model_name = model
        self.policy_version = 0

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        if not prompt_ids:
            raise ValueError("prompt_ids is empty: a prompt needs at least one token")
        from vllm.inputs import TokensPrompt

        params = self._vllm.SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=-1,
            min_p=0.0,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None,
            stop_token_ids=list(sampling.stop_token_ids) or None,
            seed=sampling.seed,
            logprobs=0,
            skip_special_tokens=False,
        )
        request_id = uuid.uuid4().hex
        final = None
        try:
            async for output in self.engine.generate(
                TokensPrompt(prompt_token_ids=list(prompt_ids)), params, request_id
            ):
                final = output
        except ValueError as exc:
            # vLLM rejects prompts longer than max_model_len before scheduling them.
            if "longer than the maximum model length" in str(exc) or "context length" in str(exc):
                return Generation([], [], "length", text="", info={"error": str(exc)})
            raise
        except Exception as exc:
            raise EngineError(f"vLLM generation failed: {type(exc).__name__}: {exc}") from exc
        if final is None or not final.outputs:
            raise EngineError("vLLM returned no output")
        out = final.outputs[0]
        token_ids = [int(t) for t in out.token_ids]
        logprobs = [float(step[token].logprob) for step, token in zip(out.logprobs or [], token_ids)]
        if len(logprobs) != len(token_ids):
            raise EngineError(f"vLLM returned {len(token_ids)} tokens but {len(logprobs)} logprobs")
        reason = out.finish_reason if out.finish_reason in ("stop", "length", "abort") else "stop"
        return Generation(
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=reason,  # type: ignore[arg-type]
            text=out.text,
            info={"stop_reason": out.stop_reason, "policy_version": self.policy_version,
                  "logprobs_mode": self.logprobs_mode},
        )

    async def update_weights(
        self, named_tensors: Iterable[tuple[str, Any]], version: int | None = None
    ) -> int:
        """Load new weights (HF parameter names) into every worker; returns the new version."""
        if self.native_transfer:
            await self._native_update(named_tensors)
        else:
            # Worker processes receive the tensors by serialization, so send CPU copies.
            weights = [(name, tensor.detach().to("cpu")) for name, tensor in named_tensors]
            await self.engine.collective_rpc("update_weights_from_tensors", args=(weights,))
        await self.engine.reset_prefix_cache()
        self.policy_version = self.policy_version + 1 if version is None else int(version)
        return self.policy_version

    async def _native_update(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        import torch
        from vllm.distributed.weight_transfer.base import WeightTransferInitRequest, WeightTransferUpdateRequest

        if not self._transfer_ready:
            await self.engine.init_weight_transfer_engine(WeightTransferInitRequest(init_info={}))
            self._transfer_ready = True
        device = torch.cuda.current_device()
        tensors = [(name, t.detach().to(device).contiguous()) for name, t in named_tensors]
        gpu_uuid = str(torch.cuda.get_device_properties(device).uuid)
        update = WeightTransferUpdateRequest(update_info=ipc_update_info(tensors, gpu_uuid))
        pause = getattr(self.engine, "pause_generation", None)
        if pause is not None:
            await pause(mode="wait")  # in-flight requests finish under the old weights
        try:
            start = getattr(self.engine, "start_weight_update", None)
            if start is not None:
                await start()
            await self.engine.update_weights(update)
            finish = getattr(self.engine, "finish_weight_update", None)
            if finish is not None:
                await finish()
        finally:
            resume = getattr(self.engine, "resume_generation", None)
            if resume is not None:
                await resume()
        del tensors  # the handles are consumed: the trainer's copies may go

    async def sleep(self, level: int = 1) -> None:
        """Free GPU memory for training (needs enable_sleep_mode=True): level 1 keeps the
        weights in host memory, level 2 drops them (the next update brings new ones)."""
        await self.engine.sleep(level)

    async def wake_up(self, tags: list[str] | None = None) -> None:
        """Take GPU memory back; `tags=["weights"]` first, to receive an update without the KV
        cache allocated, then `["kv_cache"]`."""
        await self.engine.wake_up(tags)

    async def close(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown is not None:
            shutdown()

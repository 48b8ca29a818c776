"""Pushing weights into vLLM through its native weight transfer: to a `vllm serve` server
(disk backend) and to the in-process engine (CUDA-IPC backend's update_info).

The unit test runs OpenAIEngine(server="vllm") against a loopback HTTP double that records
the calls (a double of the control plane only: what vLLM does with them needs a GPU). The GPU
test starts a real `vllm serve` with `--weight-transfer-config '{"backend": "disk"}'`, pushes
a changed checkpoint and checks that greedy outputs follow; it skips without vLLM and CUDA.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from aiohttp import web

from agent_rl.engines.base import EngineError
from agent_rl.engines.openai_http import OpenAIEngine


async def _control_plane(fail_update: bool = False):
    calls: list[tuple[str, dict]] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        calls.append((request.path_qs, body))
        if fail_update and request.path == "/update_weights":
            return web.json_response({"error": {"message": "no safetensors in path"}}, status=400)
        return web.json_response({"message": "ok"})

    app = web.Application()
    for route in ("/init_weight_transfer_engine", "/pause", "/start_weight_update", "/update_weights",
                  "/finish_weight_update", "/resume"):
        app.router.add_post(route, record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}", calls


async def test_a_checkpoint_push_follows_the_native_protocol(tmp_path):
    runner, url, calls = await _control_plane()
    engine = OpenAIEngine(url, "m", server="vllm", max_retries=0)
    try:
        assert await engine.load_checkpoint(str(tmp_path)) == 1
        assert await engine.load_checkpoint(str(tmp_path), version=7) == 7
    finally:
        await engine.close()
        await runner.cleanup()
    paths = [c[0] for c in calls]
    one_update = ["/pause?mode=wait", "/start_weight_update", "/update_weights", "/finish_weight_update", "/resume"]
    assert paths == ["/init_weight_transfer_engine", *one_update, *one_update]  # init once
    assert calls[3][1] == {"update_info": {"path": str(tmp_path)}}


async def test_a_failed_update_still_resumes_generation(tmp_path):
    runner, url, calls = await _control_plane(fail_update=True)
    engine = OpenAIEngine(url, "m", server="vllm", max_retries=0)
    try:
        with pytest.raises(EngineError, match="no safetensors"):
            await engine.load_checkpoint(str(tmp_path))
    finally:
        await engine.close()
        await runner.cleanup()
    assert [c[0] for c in calls][-1] == "/resume" and engine.policy_version == 0


def test_ipc_update_info_describes_every_tensor():
    import torch

    from agent_rl.engines.vllm import ipc_update_info

    tensors = [("a.weight", torch.zeros(2, 3)), ("b.bias", torch.ones(4, dtype=torch.bfloat16))]
    info = ipc_update_info(tensors, "GPU-uuid")
    assert info["names"] == ["a.weight", "b.bias"] and info["dtype_names"] == ["float32", "bfloat16"]
    assert info["shapes"] == [[2, 3], [4]]
    assert all(set(h) == {"GPU-uuid"} and callable(h["GPU-uuid"][0]) for h in info["ipc_handles"])


def test_unknown_server_kind_is_refused():
    with pytest.raises(ValueError, match="server must be"):
        OpenAIEngine("http://127.0.0.1:1", "m", server="tgi")  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.slow
async def test_real_vllm_server_takes_a_pushed_checkpoint(tmp_path):
    pytest.importorskip("vllm")
    import torch

    if not torch.cuda.is_available() or shutil.which("vllm") is None:
        pytest.skip("needs vLLM and a CUDA GPU")
    from agent_rl.engines.base import SamplingParams
    from agent_rl.engines.models import load_model, load_tokenizer, resolve_checkpoint

    base = resolve_checkpoint("smollm2-135m")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(base),
                               "--port", str(port), "--gpu-memory-utilization", "0.3", "--max-model-len", "2048",
                               "--weight-transfer-config", json.dumps({"backend": "disk"})], env=env)
    engine = OpenAIEngine(f"http://127.0.0.1:{port}", str(base), server="vllm")
    try:
        deadline = time.monotonic() + 600
        while not await engine.health():
            assert server.poll() is None and time.monotonic() < deadline, "vllm serve did not come up"
            time.sleep(2)
        tokenizer = load_tokenizer("smollm2-135m")
        prompt = list(tokenizer.apply_chat_template([{"role": "user", "content": "Name a fruit."}],
                                                    add_generation_prompt=True, tokenize=True))
        greedy = SamplingParams(temperature=0, max_tokens=6)
        before = await engine.generate(prompt, greedy)
        model, _ = load_model("smollm2-135m", device="cpu", dtype=torch.float32)
        with torch.no_grad():
            model.model.norm.weight.mul_(0.1)
        model.save_pretrained(str(tmp_path / "ckpt"))
        tokenizer.save_pretrained(str(tmp_path / "ckpt"))
        await engine.load_checkpoint(str(tmp_path / "ckpt"))
        after = await engine.generate(prompt, greedy)
        assert after.logprobs != before.logprobs
    finally:
        await engine.close()
        server.terminate()
        server.wait(timeout=120)

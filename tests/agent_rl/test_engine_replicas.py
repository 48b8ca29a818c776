"""ReplicaPool over real `agent-rl serve` processes on loopback (the Ray placement of replicas
is tested on a real cluster in test_ray_rollouts.py): requests spread over the replicas, a
checkpoint reaches every one, weight sync verifies each, and a replica that goes away costs
no request."""
from __future__ import annotations

import asyncio

import pytest
import torch

from agent_rl.engines.base import SamplingParams
from agent_rl.engines.openai_http import OpenAIEngine
from agent_rl.engines.replicas import NoLiveReplica, ReplicaPool
from agent_rl.engines.models import load_model
from agent_rl.train.weight_sync import sync_weights
from serve_process import ServerProcess

SAMPLE = SamplingParams(temperature=1.0, max_tokens=4, seed=3)


def _served(tiny_dir, tmp_path, count):
    """`count` replicas, each `agent-rl serve` in its own process, as on a cluster."""
    servers = [ServerProcess(tmp_path / f"replica-{i}.log",
                             command=["serve", "--model", str(tiny_dir), "--port", "0", "--served-model-name", "tiny"])
               for i in range(count)]
    return servers, [OpenAIEngine(s.url, "tiny", max_retries=1, backoff_s=0.1) for s in servers]


async def test_requests_spread_updates_reach_every_replica_and_a_lost_one_costs_nothing(tiny_dir, tmp_path):
    servers, engines = _served(tiny_dir, tmp_path, 2)
    pool = ReplicaPool(engines)
    try:
        prompt = [1, 2, 3, 4]
        await asyncio.gather(*(pool.generate(prompt, SAMPLE) for _ in range(6)))
        served = pool.stats()["served"]
        assert sum(served.values()) == 6 and min(served.values()) >= 1  # least in flight: both used

        # The trainer's update, pushed as one checkpoint folder every replica loads, then verified
        # replica by replica against the trainer's own logprobs.
        model, tokenizer = load_model(str(tiny_dir), device="cpu", dtype=torch.float32)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.01 * torch.randn_like(param))
        context = {"verify": True, "tolerance": 1e-3, "probe_tokens": 8, "temperature": 1.0,
                   "export_dir": tmp_path / "engine_weights", "device": "cpu"}
        report = await sync_weights(pool, model, tokenizer, 1, context)
        assert report.method == "checkpoint_reload" and report.verified, report.detail
        assert report.detail.startswith("2 replicas")
        assert [e.policy_version for e in pool.replicas] == [1, 1]

        # One replica goes away: requests go to the other; the next update skips it.
        servers[1].proc.kill()  # a crash, not a shutdown
        servers[1].proc.wait()
        await asyncio.gather(*(pool.generate(prompt, SAMPLE) for _ in range(4)))
        assert list(pool.stats()["dead"]) == [engines[1].base_url]
        report = await sync_weights(pool, model, tokenizer, 2, context)
        assert report.verified and report.detail.startswith("1 replicas") and pool.policy_version == 2

        servers[0].stop()
        with pytest.raises(NoLiveReplica, match="every engine replica is gone"):
            await pool.generate(prompt, SAMPLE)
    finally:
        await pool.close()
        for server in servers:
            server.stop()


def test_engine_replicas_need_a_ray_cluster():
    from agent_rl.rollout.ray_workers import ClusterConfig

    with pytest.raises(ValueError, match="set kind ray"):
        ClusterConfig(engine_replicas=2)
    assert ClusterConfig(kind="ray", engine_replicas=2, engine_replica_gpus=1).engine_replicas == 2

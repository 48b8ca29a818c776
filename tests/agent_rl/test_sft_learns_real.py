"""The whole learning pipe for real, at the smallest size that proves it: expert
demonstrations of two floor tasks in Docker → a few full fine-tuning SFT steps of
SmolLM2-135M on them → the greedy policy (temperature 0, the eval path's EpisodeRunner and
HF engine loading the SFT checkpoint) resolves at least one of those tasks under the normal
grader. Memorisation is the point here: it proves demos, SFT, checkpoints and the engine
agree on tokens; generalisation is the learning benchmark's job (benchmarks/learning_bench.py).
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from agent_rl.demos.collect import collect_demos
from agent_rl.engines.factory import make_engine
from agent_rl.engines.models import DEFAULT_MODEL, load_tokenizer
from agent_rl.rollout.agent import AgentConfig
from agent_rl.rollout.runner import EpisodeRunner
from agent_rl.train.sft import SFTTrainer
from agent_rl.train.sft_config import SFTConfig
from envs.swe_env import EnvConfig
from envs.tasks import load_tasks

# Two floor tasks with the shortest expert scripts (about 200 expert tokens each, 4 turns).
TASK_IDS = ("semvertools-007-floor", "semvertools-005-floor")
SFT_STEPS = 12  # loss 2.49 -> 0.001; both tasks resolve greedily (about 43 s a step on 2 loaded cores)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_few_sft_steps_on_demos_make_the_greedy_policy_resolve_a_task(tmp_path):
    started = time.monotonic()
    tasks = [t for t in load_tasks("builtin:floor:train") if t.instance_id in TASK_IDS]
    assert sorted(t.instance_id for t in tasks) == sorted(TASK_IDS)
    report = await collect_demos(tasks, load_tokenizer(DEFAULT_MODEL), tmp_path / "demos", concurrency=2)
    assert report.kept == len(TASK_IDS), report.rows
    print(f"demos {time.monotonic() - started:.0f}s", flush=True)

    config = SFTConfig.from_config({
        "data": {"paths": [str(tmp_path / "demos" / "trajectories.jsonl")]},
        "model": {"dtype": "float32", "device": "cpu"},
        "optim": {"lr": 1.0e-4},
        "batch_size": len(TASK_IDS), "max_steps": SFT_STEPS, "output_dir": str(tmp_path / "sft"),
        "checkpoint": {"every": 0, "save_optimizer": False}, "logging": {"tensorboard": False},
    })
    with SFTTrainer(config) as trainer:
        history = await asyncio.to_thread(trainer.train)
    print(f"sft {time.monotonic() - started:.0f}s, losses {[round(r['loss'], 3) for r in history]}", flush=True)
    assert history[-1]["loss"] < history[0]["loss"] / 4, [round(r["loss"], 3) for r in history]
    checkpoint = tmp_path / "sft" / "checkpoints" / f"step-{SFT_STEPS:06d}" / "model"
    assert checkpoint.is_dir(), sorted(p.name for p in (tmp_path / "sft" / "checkpoints").iterdir())

    engine = make_engine({"kind": "hf", "model": str(checkpoint), "device": "cpu"})
    # The expert's replies are under 100 tokens each: a tighter cap bounds a policy that rambles.
    agent = AgentConfig.from_config({"max_turns": 5, "max_tokens_per_turn": 160, "max_total_tokens": 3072,
                                     "sampling": {"temperature": 0.0}})
    try:
        async with EpisodeRunner(EnvConfig.from_config({"max_turns": 5}), concurrency=2) as runner:
            trajectories = await asyncio.gather(
                *(runner.episode(t, engine, engine.tokenizer, agent, seed=0) for t in tasks))
    finally:
        await engine.close()
    outcomes = {t.task_id: (t.resolved, t.finish_reason, t.num_turns, t.error) for t in trajectories}
    replies = {t.task_id: [m["content"] for m in t.messages if m["role"] == "assistant"] for t in trajectories}
    print(f"greedy {time.monotonic() - started:.0f}s: {outcomes}", flush=True)
    assert any(t.resolved for t in trajectories), json.dumps({"outcomes": outcomes, "replies": replies}, indent=1)

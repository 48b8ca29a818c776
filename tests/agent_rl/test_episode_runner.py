"""The one EpisodeRunner on the real engine, with a scripted policy (not the LLM): warm pools
kept across trainer-like steps, no container start on the critical path after warm-up, and
nothing left behind when it closes."""
from __future__ import annotations

import asyncio
import os

import docker
import pytest
from test_agent import ScriptedEngine

from agent_rl.rollout.runner import EpisodeRunner, collect

pytestmark = pytest.mark.docker

POLICY = ["```bash\nls\n```", "```submit\n```"]
AGENT = {"max_turns": 3, "max_tokens_per_turn": 32}


@pytest.fixture(scope="module")
def tokenizer():
    from agent_rl.engines.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def easy_task():
    from envs.suites import load_suite

    return load_suite("datekit", difficulty="easy")[0]


def _my_containers() -> list[str]:
    client = docker.from_env()
    found = client.api.containers(all=True, filters={"label": f"agent-rl.owner-pid={os.getpid()}"})
    return [c["Id"] for c in found]


def test_pools_stay_warm_across_steps_and_no_cold_starts_after_warm_up(tokenizer, easy_task):
    runner = EpisodeRunner({"use_pool": True, "max_turns": 3}, concurrency=2)
    per_step = []
    try:
        for step in range(3):
            engine = ScriptedEngine(tokenizer, POLICY)
            before = runner.stats()
            # Each trainer step runs under its own event loop (asyncio.run), like Trainer._collect.
            trajs = asyncio.run(runner.collect([easy_task], engine, tokenizer, group_size=2, agent_config=AGENT,
                                               progress=False, seed=step))
            assert [t.error for t in trajs] == [None, None]
            assert all(t.finish_reason == "submitted" for t in trajs)
            after = runner.stats()
            per_step.append({k: after[k] - before.get(k, 0) for k in ("started", "cold_starts")})
            pools = dict(runner.sandboxes._pools)
            # The trainer's update phase: the background refill catches up meanwhile.
            assert runner.wait_warm(timeout=180)
            assert runner.stats()["warm"] == 4  # 2 workspaces + 2 graders, kept for the next step
        assert dict(runner.sandboxes._pools) == pools  # the same pools, step after step
        assert per_step[0]["cold_starts"] > 0  # warm-up: the first batch found nothing started
        assert [s["cold_starts"] for s in per_step[1:]] == [0, 0]
        assert [s["started"] for s in per_step[1:]] == [4, 4]  # refills only, in the background
    finally:
        runner.close()
    assert _my_containers() == []  # close() left nothing behind


def test_collect_without_a_runner_closes_what_it_made(tokenizer, easy_task):
    engine = ScriptedEngine(tokenizer, POLICY)
    trajs = asyncio.run(collect([easy_task], engine, tokenizer, group_size=2, concurrency=2, agent_config=AGENT,
                                env_config={"use_pool": True, "max_turns": 3}, progress=False))
    assert [t.error for t in trajs] == [None, None]
    assert _my_containers() == []


def test_prefetch_warms_the_next_steps_new_image(tokenizer, easy_task):
    from envs.task_images import task_image
    from envs.tasks import load_tasks

    other = next(t for t in load_tasks("builtin:easy") if task_image(t) != task_image(easy_task))
    with EpisodeRunner({"use_pool": True, "max_turns": 3}, concurrency=2) as runner:
        asyncio.run(runner.collect([easy_task], ScriptedEngine(tokenizer, POLICY), tokenizer, group_size=2,
                                   agent_config=AGENT, progress=False))
        runner.prefetch([other], 2)  # what the trainer does before its update
        runner._prefetching.result(timeout=300)
        assert runner.wait_warm(timeout=180)
        before = runner.stats()
        trajs = asyncio.run(runner.collect([other], ScriptedEngine(tokenizer, POLICY), tokenizer, group_size=2,
                                           agent_config=AGENT, progress=False))
        assert [t.error for t in trajs] == [None, None]
        # The new image's containers were warm.
        assert runner.stats()["cold_starts"] == before["cold_starts"], (before, runner.stats())
        old_pools = [p for p in runner.sandboxes._pools.values() if p.image == task_image(easy_task)]
        assert old_pools and all(p.size == 0 and p.warm_count() == 0 for p in old_pools)  # last step's image let go

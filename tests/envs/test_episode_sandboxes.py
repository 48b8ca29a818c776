"""EpisodeSandboxes on the real engine: the grader gets a pristine pooled container, never reused."""
from __future__ import annotations

import docker
import docker.errors
import pytest
from tinytask import make_tiny_task

from envs.episode_sandboxes import EpisodeSandboxes
from envs.swe_env import SWEEnv
from envs.task_images import task_image

pytestmark = pytest.mark.docker

FIX = (
    "```edit calc/ops.py\n<<<<<<< SEARCH\ndef add(a, b):\n    return a - b\n"
    "=======\ndef add(a, b):\n    return a + b\n>>>>>>> REPLACE\n```"
)


def _exists(container_id: str) -> bool:
    try:
        docker.from_env().api.inspect_container(container_id)
        return True
    except docker.errors.NotFound:
        return False


def test_grader_gets_a_pristine_pooled_container_that_is_never_reused(tmp_path):
    task = make_tiny_task(tmp_path)
    handed: list[dict] = []
    with EpisodeSandboxes(use_pool=True, pool_size=1, max_concurrency=2) as sandboxes:

        def grader(image, task_):
            warm = {s.container_id for pool in sandboxes._pools.values() if pool.image == image
                    for s in list(pool._ready.queue)}
            box = sandboxes.grader(image, task_)
            state = box.exec("git status --porcelain --untracked-files=all; ls /tmp", timeout=30).output
            handed.append({"id": box.container_id, "pooled": box.container_id in warm, "state": state})
            return box

        sandboxes.prepare([(task_image(task), task, 1)])  # what the episode runner does per batch
        env = SWEEnv(tasks=[task], sandbox_factory=sandboxes.workspace, grading_factory=grader)
        workspaces = []
        for _ in range(2):
            env.reset(options={"task": task})
            sandboxes.wait_warm(timeout=120)  # grader pool warm before the grade, as after warm-up
            workspaces.append(env.sandbox.container_id)
            env.step("```bash\necho agent-was-here > leak.txt\n```")
            env.step(FIX)
            _, reward, terminated, _, info = env.step("```submit\n```")
            assert terminated and reward == 1.0, info["grade"]
        env.close()
        stats = sandboxes.stats()
    assert len(handed) == 2 and len({h["id"] for h in handed}) == 2  # a new container per grade
    assert all(h["pooled"] for h in handed)  # taken warm from the grader's pool, not cold-started
    assert all(h["state"].strip() == "" for h in handed)  # pristine: no agent files, nothing in /tmp
    assert not {h["id"] for h in handed} & set(workspaces)  # never the agent's container
    assert not any(_exists(h["id"]) for h in handed)  # destroyed after its one grade
    assert stats["pools"] == 2 and stats["started"] >= 4


def test_unpooled_sandboxes_count_every_start_as_cold(tmp_path):
    task = make_tiny_task(tmp_path)
    with SWEEnv(tasks=[task]) as env:
        env.reset(options={"task": task})
        env.step("```submit\n```")
        assert env._own_sandboxes.stats() == {"started": 2, "cold_starts": 2, "warm": 0, "pools": 0}

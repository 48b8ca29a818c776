"""`collect` and `agent-rl rollout` on real parts: SWEEnv in Docker, SmolLM2 through HFEngine.

One task of each batch is deliberately broken (its repository does not exist): it must come
back as error trajectories while the rest of the batch completes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent_rl.rollout.runner import collect, summarize
from agent_rl.rollout.trajectory import read_jsonl
from envs.tasks import Task

pytestmark = [pytest.mark.docker, pytest.mark.slow]

AGENT = {"max_turns": 1, "max_tokens_per_turn": 16, "sampling": {"seed": 5}}


@pytest.fixture(scope="module")
def tasks():
    from envs.suites import load_suite

    easy = load_suite("datekit", difficulty="easy")[0]
    broken = Task(
        instance_id="broken-missing-repo",
        repo="/nonexistent/agent-rl/repo",
        base_commit="0" * 40,
        problem_statement="This task's repository does not exist.",
    )
    return [easy, broken]


async def test_collect_records_the_broken_task_and_returns_the_rest(tasks):
    from agent_rl.engines.hf import HFEngine
    from agent_rl.engines.models import load_model

    model, tokenizer = load_model("smollm2-135m")
    engine = HFEngine(model, tokenizer)
    try:
        trajs = await collect(
            tasks, engine, tokenizer, group_size=2, concurrency=2,
            env_config={"max_turns": 1}, agent_config=AGENT, progress=True, policy_version=7,
        )
    finally:
        await engine.close()
    assert [(t.task_id, t.group_index) for t in trajs] == [
        (tasks[0].instance_id, 0), (tasks[0].instance_id, 1),
        ("broken-missing-repo", 0), ("broken-missing-repo", 1),
    ]
    good, bad = trajs[:2], trajs[2:]
    for traj in good:
        assert traj.error is None, traj.error
        assert traj.trainable and traj.policy_version == 7 and traj.num_turns == 1
        assert traj.truncated and "resolved" in traj.grade
        assert 0 < traj.num_sampled_tokens <= 16
    for traj in bad:
        assert traj.error and not traj.trainable and traj.finish_reason == "error"
        assert "nonexistent" in traj.error or "broken-missing-repo" in traj.error
    summary = summarize(trajs)
    assert (summary["episodes"], summary["errors"], summary["trainable"]) == (4, 2, 2)


def test_rollout_command_writes_outputs(tasks, tmp_path):
    task_file = tmp_path / "tasks.jsonl"
    task_file.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in tasks))
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "agent_rl.cli", "rollout", "--tasks", str(task_file), "--group-size", "1",
         "--concurrency", "2", "--max-turns", "1", "--max-tokens-per-turn", "16", "--seed", "1",
         "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=900, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trajs = list(read_jsonl(str(out / "trajectories.jsonl")))
    assert sorted(t.task_id for t in trajs) == sorted(t.instance_id for t in tasks)
    assert [t.task_id for t in trajs if t.error] == ["broken-missing-repo"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["errors"] == 1 and summary["group_size"] == 1
    sft_lines = (out / "sft.jsonl").read_text().splitlines()
    assert len(sft_lines) == summary["sft_records"] == summary["solved"]
    assert "mean reward" in proc.stdout

"""Outside harnesses playing real episodes through the gateway, in real Docker sandboxes.

- the real mini-swe-agent (PyPI), unchanged, with SmolLM2 behind the gateway: its commands
  run in our hardened workspace through /exec, every sampled token is recorded exactly as the
  engine produced it, the diff is graded in a fresh container; and a DAPO step on its own
  episodes, whose recomputed logprobs match the engine's;
- a scripted harness that summarises its history mid-episode, trained on for one DAPO step,
  synchronously and with the async producer: the session splits, one of two episodes wins,
  and the weights move;
- harnesses that never call back: no model call, or a hang past the timeout.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from agent_rl.engines.base import Generation, SamplingParams
from agent_rl.rollout.runner import EpisodeRunner
from agent_rl.train.config import load_train_config
from agent_rl.train.trainer import Trainer
from envs.tasks import load_tasks
from processes import pids_with

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "harness_scripts"
MINI_SWE_AGENT = ("{python} -m agent_rl.harnesses.mini_swe_agent --base-url {base_url} --exec-url {exec_url} "
                  "--task-file {task_file} --model {model} --step-limit 2 --output {log_dir}/{session}.traj.json")
ENV = {"max_observation_chars": 1500, "use_pool": False}


class Tap:
    """The real engine, with every generation it returned kept for comparison."""

    def __init__(self, engine) -> None:
        self.engine, self.name, self.outputs = engine, "smol", []

    @property
    def context_window(self):
        return self.engine.context_window

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        generation = await self.engine.generate(prompt_ids, sampling)
        self.outputs.append(generation)
        return generation

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def engine():
    from agent_rl.engines.hf import HFEngine

    engine = HFEngine("smollm2-135m", max_batch_size=2)
    yield engine
    engine.close_sync()


async def test_real_mini_swe_agent_episode_is_recorded_token_exactly_and_graded(engine, tmp_path):
    tap = Tap(engine)
    (task,) = load_tasks("builtin:floor")[:1]
    rollout = {"harness": {"command": MINI_SWE_AGENT, "log_dir": str(tmp_path), "timeout_s": 600}}
    async with EpisodeRunner(ENV, concurrency=1, rollout=rollout) as runner:
        trajectories = await runner.collect([task], tap, engine.tokenizer, group_size=1, progress=False,
                                            agent_config={"max_tokens_per_turn": 24, "max_total_tokens": 4096})
    assert trajectories and all(t.error is None for t in trajectories), [t.error for t in trajectories]
    assert {t.finish_reason for t in trajectories} <= {"harness_exit", "harness_failed"}
    # mini-swe-agent's own record of the run: one model call per recorded call.
    (saved,) = list(tmp_path.glob("*.traj.json"))
    info = json.loads(saved.read_text())["info"]
    assert info["model_stats"]["api_calls"] == len(tap.outputs) == sum(t.num_turns for t in trajectories) >= 1
    # Sampled tokens and their logprobs are exactly the engine's, in order, across segments.
    sampled = [(i, lp) for t in trajectories
               for i, lp, m in zip(t.response_ids, t.behaviour_logprobs, t.loss_mask) if m]
    engine_out = [(i, lp) for g in tap.outputs for i, lp in zip(g.token_ids, g.logprobs)]
    assert sampled == engine_out
    # A malformed reply is dropped from mini-swe-agent's history, so its next prompt is a
    # rewrite: the session splits there instead of mis-attributing tokens.
    assert {t.segments for t in trajectories} == {len(trajectories)}
    grade = trajectories[0].grade
    assert grade["resolved"] is False and grade["tests_status"]["FAIL_TO_PASS"]["failure"]
    assert {t.reward for t in trajectories} == {0.0}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_scripted_harness_that_rewrites_history_trains_one_dapo_step(tmp_path, mode):
    (task,) = load_tasks("builtin:easy")[:1]
    gold = tmp_path / "gold.patch"
    gold.write_text(task.patch)
    command = f"{{python}} {SCRIPTS / 'truncating_harness.py'} --base-url {{base_url}} --exec-url {{exec_url}} " \
              "--task-file {task_file}"
    recipe = tmp_path / "harness.yaml"
    recipe.write_text(json.dumps({"rollout": {"harness": {
        "command": command, "timeout_s": 300, "log_dir": str(tmp_path / "logs"),
        "env": {"WINNER_FLAG": str(tmp_path / "winner"), "GOLD_PATCH": str(gold)}}}}))
    base = load_train_config(REPO / "configs" / "smoke-cpu.yaml").to_dict()
    merged = base | {"rollout": base["rollout"] | json.loads(recipe.read_text())["rollout"]}
    recipe.write_text(json.dumps(merged))
    config = load_train_config(recipe, [
        f"output_dir={tmp_path / 'run'}", "max_steps=1", f"tasks.ids=[{task.instance_id}]", "rollout.tasks_per_step=1",
        "rollout.group_size=2", "rollout.concurrency=2", "agent.max_tokens_per_turn=8",
        "algorithm.mini_batch_size=2", "algorithm.micro_batch_size=1", "algorithm.overlong_mode=none",
        f"algorithm.mode={mode}", "algorithm.max_staleness=1",
        "logging.progress=false", "logging.tensorboard=false"])
    with Trainer(config) as trainer:
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        (row,) = trainer.train()
        changed = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    # One winner of two episodes (async: the producer may start the next draw early; that one
    # finds the flag taken and is not part of this step).
    assert row["reward_mean"] == 0.5 and row["solve_rate"] == 0.5
    assert row["history_splits"] == 2 and row["trajectories"] == 4  # each episode: two segments
    assert row["grad_norm"] > 0 and changed > 0
    if mode == "async":  # the producer's gateway recorded the versions: nothing older than η trains
        assert row["staleness_max"] <= 1 and row["stale_dropped_groups"] == 0, row
    logs = "\n".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    sandbox = [json.loads(line.split("sandbox: ", 1)[1]) for line in logs.splitlines() if line.startswith("sandbox: ")]
    assert len(sandbox) == 2 if mode == "sync" else len(sandbox) >= 2  # async: draws started ahead ran too
    for result in sandbox:  # commands ran in the hardened workspace: uid 1000, the task's workdir
        uid, cwd = result["output"].split()
        assert uid == "1000" and cwd == task.workdir and result["returncode"] == 0


def test_a_dapo_step_trains_on_the_real_mini_swe_agents_own_episodes(tmp_path):
    # mini-swe-agent, unchanged, plays a group of two through the gateway; the trainer then
    # recomputes the logprobs of exactly the tokens the engine sampled. SmolLM2 solves nothing
    # here, so the group's advantages are zero: the entropy bonus is what moves the weights,
    # which proves the harness's tokens reach the loss, not that the harness learns.
    (task,) = load_tasks("builtin:floor")[:1]
    base = load_train_config(REPO / "configs" / "smoke-cpu.yaml").to_dict()
    rollout = {"harness": {"command": MINI_SWE_AGENT, "log_dir": str(tmp_path / "logs"), "timeout_s": 600}}
    recipe = tmp_path / "mini.yaml"
    recipe.write_text(json.dumps(base | {"rollout": base["rollout"] | rollout}))
    config = load_train_config(recipe, [
        f"output_dir={tmp_path / 'run'}", "max_steps=1", "tasks.source=builtin:floor", f"tasks.ids=[{task.instance_id}]",
        "rollout.tasks_per_step=1", "rollout.group_size=2", "rollout.concurrency=2", "agent.max_tokens_per_turn=24",
        "agent.max_total_tokens=4096", "algorithm.mini_batch_size=2", "algorithm.micro_batch_size=1",
        "algorithm.overlong_mode=none", "algorithm.kl_beta=0", "algorithm.entropy_coef=0.01",
        "logging.progress=false", "logging.tensorboard=false"])
    with Trainer(config) as trainer:
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        (row,) = trainer.train()
        changed = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    saved = list((tmp_path / "logs").glob("*.traj.json"))
    assert len(saved) == 2  # mini-swe-agent's own record of each episode
    calls = sum(json.loads(p.read_text())["info"]["model_stats"]["api_calls"] for p in saved)
    assert row["trajectories"] >= 2 and calls >= 2 and row["reward_mean"] == 0.0
    # The trainer's logprobs of the recorded tokens match the engine's (same weights, fp32):
    # the recording is token-exact, or this would be of order 1.
    assert row["is_mismatch_mean_abs_logprob_diff"] < 1e-3, row["is_mismatch_mean_abs_logprob_diff"]
    assert row["grad_norm"] > 0 and changed > 0


async def test_harnesses_that_never_call_back_give_error_episodes(engine, tmp_path):
    (task,) = load_tasks("builtin:floor")[:1]
    silent = {"harness": {"command": f"{sys.executable} -c pass"}}
    hanging = {"harness": {"command": f"{sys.executable} -c 'import time; time.sleep(600)'", "timeout_s": 5}}
    for rollout, reason in ((silent, "harness_exit"), (hanging, "harness_timeout")):
        async with EpisodeRunner(ENV, concurrency=1, rollout=rollout) as runner:
            (traj,) = await runner.collect([task], engine, engine.tokenizer, group_size=1, progress=False)
        assert traj.finish_reason == reason and not traj.trainable
        assert "harness made no model calls" in traj.error
        assert traj.grade["resolved"] is False  # the workspace was still graded, in a fresh container


@pytest.mark.parametrize("partial_groups", ["keep", "refill"])
async def test_the_step_deadline_cuts_a_hung_harness_episode_in_process(engine, tmp_path, partial_groups):
    """Two harness episodes in this process: one harness exits at once, the other sleeps (its
    command line carries a marker to find it by). Once the first is done, the step deadline
    kills the second's process group and records a cut with no outcome; under `refill` the
    member is played again, and cut again by the refill round's own bound."""
    import time

    fast, slow = load_tasks("builtin:floor")[:2]
    marker = f"hang-{tmp_path.name}"
    script = tmp_path / "harness.py"
    script.write_text(f"import sys, time\ntime.sleep(600 if sys.argv[1] == {slow.instance_id!r} else 0)\n")
    rollout = {"harness": {"command": f"{sys.executable} {script} {{instance_id}} {marker}", "timeout_s": 300},
               "step_deadline": {"after_fraction": 0.5, "grace_s": 1.0, "partial_groups": partial_groups,
                                 **({"refill_s": 2.0} if partial_groups == "refill" else {})}}
    started = time.monotonic()
    async with EpisodeRunner(ENV, concurrency=2, rollout=rollout) as runner:
        trajs = await runner.collect([fast, slow], engine, engine.tokenizer, group_size=1, progress=False)
    took = time.monotonic() - started
    assert took < 120, took
    assert not pids_with(marker)  # the cut harness's process group is gone
    assert [t.task_id for t in trajs] == [fast.instance_id, slow.instance_id] + (
        [slow.instance_id] if partial_groups == "refill" else [])
    assert trajs[0].finish_reason == "harness_exit" and "harness made no model calls" in trajs[0].error
    for cut in trajs[1:]:
        assert (cut.finish_reason, cut.grade["cut_by"], cut.grade["phase"]) == ("deadline", "step", "harness")
        assert cut.error.startswith("step_deadline: ") and not cut.trainable
    assert [t.refill for t in trajs] == [False, False] + ([True] if partial_groups == "refill" else [])

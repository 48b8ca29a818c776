"""Outside harness episodes on a real two-node Ray cluster (`rollout.harness` with
`cluster.kind: ray`), collected directly and in a DAPO training step.

The cluster comes from test_ray_rollouts.py's fixture (`ray start --head` and `ray start
--address=...`, two raylets on this machine). The driver serves a scripted model over HTTP;
each rollout worker runs the real mini-swe-agent (PyPI, unchanged) on its own node, against
its own recording gateway on that node's loopback, in real Docker sandboxes graded in fresh
containers. One step, two tasks, a group of two each: the first task's episodes apply the gold
patch and submit (resolved, recorded token-exactly, one on each node); the second task's run a
command that would hang for 1000 s, and the step deadline cuts them on their workers: the
harness processes are killed, their containers destroyed and their gateway sessions dropped.
Then a training step whose group of two is played by a scripted harness on both nodes (one
winner, each episode split in two segments) trains on what the workers' gateways recorded.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

import test_ray_rollouts
from processes import pids_with
from agent_rl.engines.base import Generation
from agent_rl.train.config import load_train_config

pytestmark = [pytest.mark.docker, pytest.mark.slow]

cluster = test_ray_rollouts.cluster  # the same two-node cluster fixture (module scope: started once here)

MINI_SWE_AGENT = ("{python} -m agent_rl.harnesses.mini_swe_agent --base-url {base_url} --exec-url {exec_url} "
                  "--task-file {task_file} --model {model} --step-limit 4 --output {log_dir}/{session}.traj.json")
SUBMIT = "THOUGHT: the fix is in.\n\n```mswea_bash_command\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"
HANG = "THOUGHT: wait for it.\n\n```mswea_bash_command\nsleep 1000\n```"
IM_END = 2  # SmolLM2's <|im_end|>
REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "harness_scripts"


def _apply(patch: str) -> str:
    return f"THOUGHT: apply the fix.\n\n```mswea_bash_command\ngit apply <<'AGENT_RL_EOF'\n{patch}AGENT_RL_EOF\n```"


class HarnessScript:
    """The model the driver serves: per task (known by its statement's first line in the
    prompt) a list of replies, the k-th for the k-th assistant turn. Replies depend on the
    prompt only, so episodes on different workers may interleave freely."""

    name = "scripted"
    context_window = 8192  # what the server checks prompts against
    policy_version = 0

    def __init__(self, tokenizer, scripts: dict[str, list[str]]) -> None:
        self.tokenizer, self.scripts = tokenizer, scripts
        self.calls: list[tuple[str, list[int], list[int]]] = []  # (marker, prompt ids, sampled ids)

    async def generate(self, prompt_ids, sampling) -> Generation:
        text = self.tokenizer.decode(prompt_ids)
        (marker,) = [m for m in self.scripts if m in text]
        script = self.scripts[marker]
        reply = script[min(text.count("<|im_start|>assistant") - 1, len(script) - 1)]
        ids = self.tokenizer.encode(reply, add_special_tokens=False) + [IM_END]
        finish = "stop"
        if len(ids) > sampling.max_tokens:
            ids, finish = ids[: sampling.max_tokens], "length"
        self.calls.append((marker, list(prompt_ids), ids))
        return Generation(ids, [-0.25] * len(ids), finish, text=reply, info={"policy_version": 0})

    async def close(self) -> None:
        pass


def _saved_info(path: Path) -> dict:
    """mini-swe-agent's saved `info` (a cut episode's file may have been half written)."""
    try:
        return json.loads(path.read_text())["info"]
    except (ValueError, KeyError):
        return {}


async def test_harness_episodes_run_on_ray_workers_and_the_step_deadline_cuts_hung_ones(cluster, tmp_path):
    import docker
    import ray

    from agent_rl.engines.models import load_tokenizer
    from agent_rl.rollout.ray_workers import ClusterConfig, RayEpisodeRunner, start_engine_server
    from envs.suites import load_suite
    from envs.task_images import task_image
    from sandboxes.executor import run_blocking

    tokenizer = load_tokenizer("smollm2-135m")
    fix, hang = load_suite("datekit", difficulty="easy")[:2]
    await run_blocking(task_image, fix)  # both tasks share the repository image: built here once
    fix_marker, hang_marker = fix.problem_statement.splitlines()[0], hang.problem_statement.splitlines()[0]
    engine = HarnessScript(tokenizer, {fix_marker: [_apply(fix.patch), SUBMIT], hang_marker: [HANG]})
    server, url = await start_engine_server(engine, model_name="scripted", base_spec="smollm2-135m", host="127.0.0.1")
    logs = tmp_path / "logs"
    rollout = {"harness": {"command": MINI_SWE_AGENT, "log_dir": str(logs), "timeout_s": 300},
               "step_deadline": {"after_fraction": 0.5, "grace_s": 3.0}}
    runner = RayEpisodeRunner(ClusterConfig(kind="ray", address=cluster["address"], episodes_per_worker=2),
                              {"use_pool": False}, engine_url=url, served_model="scripted",
                              tokenizer_spec="smollm2-135m", rollout=rollout)
    client = docker.from_env()
    try:
        assert len(runner.workers) == 2
        started = time.monotonic()
        trajs = await runner.collect([fix, hang], engine, tokenizer, group_size=2, progress=False,
                                     agent_config={"max_tokens_per_turn": 512, "max_total_tokens": 8192})
        took = time.monotonic() - started
        stats = runner.take_stats()
        # Whatever the cut interrupted is gone: every gateway session, the harness processes
        # (their process groups), the containers running the hung command.
        sessions = await run_blocking(ray.get, [w.handle.gateway_sessions.remote() for w in runner.workers])
        until = time.monotonic() + 30
        while (pids_with(str(logs)) or await run_blocking(test_ray_rollouts._running_command, client, "sleep 1000")) \
                and time.monotonic() < until:
            await asyncio.sleep(0.5)
        assert not pids_with(str(logs))
        assert not await run_blocking(test_ray_rollouts._running_command, client, "sleep 1000")
    finally:
        await run_blocking(runner.close)
        await server.cleanup()
    assert took < 90, took
    assert sessions == [0, 0]

    # The first task's two episodes: one on each node, resolved, one segment of two calls each.
    solved, cut = trajs[:2], trajs[2:]
    assert [(t.task_id, t.group_index) for t in trajs] == [(fix.instance_id, 0), (fix.instance_id, 1),
                                                           (hang.instance_id, 0), (hang.instance_id, 1)]
    assert sorted(stats.per_node.values()) == [1, 1] and stats.retried == 0  # the cut ones came back from no node
    for traj in solved:
        assert traj.error is None and traj.trainable, traj.error
        assert (traj.finish_reason, traj.segments, traj.num_turns) == ("harness_exit", 1, 2)
        assert traj.grade["resolved"] is True and traj.reward == 1.0  # graded in a fresh container on the worker
        # Token-exact: the engine saw exactly the recorded prompts, and every sampled token
        # (logprob included) is one the engine produced, in order.
        full = traj.prompt_ids + traj.response_ids
        calls = [(p, o) for m, p, o in engine.calls if m == fix_marker and full[:len(p) + len(o)] == p + o]
        calls = sorted({(tuple(p), tuple(o)) for p, o in calls}, key=lambda c: len(c[0]))  # the two episodes are alike
        assert len(calls) == 2 and list(calls[0][0]) == traj.prompt_ids
        sampled = [(i, lp) for i, lp, m in zip(traj.response_ids, traj.behaviour_logprobs, traj.loss_mask) if m]
        assert sampled == [(i, -0.25) for _, out in calls for i in out]
    assert sum(m == fix_marker for m, _, _ in engine.calls) == 4
    assert sum(m == hang_marker for m, _, _ in engine.calls) == 2  # the cut found each in its hung command
    # mini-swe-agent's own record: it submitted after two calls, talking to its own worker's
    # gateway on loopback (two workers, two gateways), never to the driver's engine.
    finished = [info for info in map(_saved_info, logs.glob("*.traj.json")) if info.get("exit_status") == "Submitted"]
    assert len(finished) == 2 and all(info["model_stats"]["api_calls"] == 2 for info in finished)
    bases = {urlparse(info["config"]["model"]["model_kwargs"]["api_base"]) for info in finished}
    assert {b.hostname for b in bases} == {"127.0.0.1"} and len({b.port for b in bases}) == 2
    assert urlparse(url).port not in {b.port for b in bases}

    # The second task's: cut on their workers by the step deadline, never trained.
    for traj in cut:
        assert (traj.finish_reason, traj.grade["cut_by"], traj.grade["phase"]) == ("deadline", "step", "remote")
        assert traj.error.startswith("step_deadline: ") and not traj.trainable


def test_a_training_step_trains_on_harness_episodes_played_on_both_nodes(cluster, tiny_dir, tmp_path):
    # The scripted harness of test_gateway_harness.py (three calls, the third after it dropped
    # its history: two segments per episode; the first episode to claim the flag applies the
    # gold patch) on one worker per node, generating through the trainer's served engine.
    import torch

    from agent_rl.train.trainer import Trainer
    from envs.tasks import load_tasks

    (task,) = load_tasks("builtin:easy")[:1]
    gold = tmp_path / "gold.patch"
    gold.write_text(task.patch)
    command = f"{{python}} {SCRIPTS / 'truncating_harness.py'} --base-url {{base_url}} --exec-url {{exec_url}} " \
              "--task-file {task_file}"
    base = load_train_config(REPO / "configs" / "smoke-cpu.yaml").to_dict()
    harness = {"command": command, "timeout_s": 300, "log_dir": str(tmp_path / "logs"),
               "env": {"WINNER_FLAG": str(tmp_path / "winner"), "GOLD_PATCH": str(gold)}}
    recipe = tmp_path / "harness.json"
    recipe.write_text(json.dumps(base | {"rollout": base["rollout"] | {"harness": harness}}))
    config = load_train_config(recipe, [
        f"model.name={tiny_dir}", f"output_dir={tmp_path / 'run'}", "max_steps=1", "checkpoint.every=0",
        "cluster.kind=ray", f"cluster.address={cluster['address']}", "cluster.episodes_per_worker=1",
        f"tasks.ids=[{task.instance_id}]", "rollout.tasks_per_step=1", "rollout.group_size=2",
        "agent.max_tokens_per_turn=8", "algorithm.mini_batch_size=2", "algorithm.micro_batch_size=1",
        "algorithm.overlong_mode=none", "algorithm.kl_beta=0", "logging.progress=false", "logging.tensorboard=false"])
    with Trainer(config) as trainer:
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        row = trainer.train_step()
        changed = sum(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    assert row["rollout_nodes"] == 2 and row["rollout_retried"] == 0 and row["error_trajectories"] == 0
    assert row["reward_mean"] == 0.5 and row["history_splits"] == 2 and row["trajectories"] == 4
    assert row["grad_norm"] > 0 and changed > 0

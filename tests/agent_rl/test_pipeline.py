"""`agent-rl pipeline`: the config joins the stages itself, bad input is a clear error, the
reward-curve statistics are right, and (docker, slow) a tiny real pipeline runs every stage and
a re-run resumes instead of redoing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_rl.cli import main
from agent_rl.eval.reward_curve import bootstrap_diff, episode_rewards, reward_curve, step_rewards
from agent_rl.recipes import load_config
from agent_rl.train.pipeline import (
    PipelineConfig, before_after_lines, finished_checkpoint, spread_over_libraries, write_demo_tasks, write_heldout_tasks,
    write_train_tasks,
)
from strictconfig import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("override, message", [
    ("sft.output_dir=x", "sft.output_dir are set by the pipeline"),
    ("train.output_dir=x", "train.output_dir are set by the pipeline"),
    ("sft.data.paths=[a.jsonl]", "sft.data.paths are set by the pipeline"),
    ("sft.model.name=x", "sft.model are set by the pipeline"),
    ("train.checkpoint.dir=/tmp/c", "train.checkpoint.dir are set by the pipeline"),
    ("sft.max_step=3", "sft: unknown key(s) 'max_step' (did you mean 'max_steps'?)"),
    ("train.algorithm.eps_hihg=1", "train.algorithm: unknown key(s) 'eps_hihg'"),
    ("demos.style=lazy", "demos.style"),
    ("eval.temperature=-1", "eval.temperature"),
])
def test_bad_pipeline_config_names_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(PipelineConfig, ROOT / "configs" / "learn-cpu.yaml", [override])
    assert message in str(err.value)


def test_the_main_job_recipe_loads_and_its_cli_reports_errors_like_the_others(capsys):
    config = load_config(PipelineConfig, ROOT / "configs" / "learn-cpu.yaml")
    assert config.train.model.name == "smollm2-135m" and config.sft.max_steps >= 1
    assert config.train.batch_size % config.train.algorithm.mini_batch_size == 0
    assert main(["pipeline", "--config", str(ROOT / "configs" / "learn-cpu.yaml"), "sft.max_step=3"]) == 2
    assert "agent-rl pipeline: invalid config: sft: unknown key(s) 'max_step'" in capsys.readouterr().err


def test_train_tasks_are_written_once_in_the_order_of_their_ids(tmp_path):
    ids = ["lrukit-001-floor", "datekit-001-floor"]
    config = PipelineConfig.from_config({"output_dir": str(tmp_path), "train": {"tasks": {"source": "builtin:floor:train", "ids": ids}}})
    path, written = write_train_tasks(config)
    assert written == ids and [json.loads(line)["instance_id"] for line in Path(path).read_text().splitlines()] == ids
    bad = PipelineConfig.from_config({"output_dir": str(tmp_path), "train": {"tasks": {"source": "builtin:floor:train",
                                                                                       "ids": ["inilike-001-floor"]}}})
    with pytest.raises(ValueError, match="not in 'builtin:floor:train'.*inilike-001-floor"):
        write_train_tasks(bad)  # a held-out task is not a train task


def test_demo_tasks_default_to_the_train_tasks_and_can_leave_them_out(tmp_path):
    ids = ["lrukit-001-floor", "datekit-001-floor"]

    def config(**demos):
        return PipelineConfig.from_config({
            "output_dir": str(tmp_path), "demos": demos,
            "train": {"tasks": {"source": "builtin:floor:train", "ids": ids}},
            "eval": {"heldout": "builtin:floor:heldout", "heldout_limit": 2}})

    plain = config()
    train, _ = write_train_tasks(plain)
    heldout = write_heldout_tasks(plain)
    # heldout_limit spans the libraries: the split's first two tasks are both inilike's.
    assert [json.loads(line)["instance_id"] for line in Path(heldout).read_text().splitlines()] == [
        "inilike-001-floor", "spanset-001-floor"]
    assert write_demo_tasks(plain, train, heldout) == (train, ids)  # same file: the old stage marks hold

    path, demo_ids = write_demo_tasks(config(tasks="builtin:floor:train", exclude_train_tasks=True), train, heldout)
    assert len(demo_ids) > 10 and not set(ids) & set(demo_ids)
    assert [json.loads(line)["instance_id"] for line in Path(path).read_text().splitlines()] == demo_ids
    _, few = write_demo_tasks(config(tasks="builtin:floor:train", exclude_train_tasks=True, limit=3), train, heldout)
    assert few == demo_ids[:3]
    # A list of specs: the libraries the RL tasks do not come from (the main job's recipe).
    _, other_libraries = write_demo_tasks(config(tasks=["builtin:floor:linediff", "builtin:floor:semvertools"]),
                                          train, heldout)
    assert {i.split("-")[0] for i in other_libraries} == {"linediff", "semvertools"} and len(other_libraries) > 20
    with pytest.raises(ValueError, match="held-out tasks.*inilike-001-floor"):
        write_demo_tasks(config(tasks="builtin:floor"), train, heldout)  # the whole tier: held-out included
    with pytest.raises(ValueError, match="no tasks left to demonstrate.*train tasks are excluded"):
        write_demo_tasks(config(exclude_train_tasks=True), train, heldout)


def test_spread_over_libraries_takes_each_librarys_next_task_in_turn():
    from types import SimpleNamespace

    tasks = [SimpleNamespace(instance_id=i) for i in ("b-1", "b-2", "b-3", "a-1", "c-1", "a-2")]
    ids = lambda picked: [t.instance_id for t in picked]  # noqa: E731
    assert ids(spread_over_libraries(tasks, 4)) == ["a-1", "b-1", "c-1", "a-2"]
    assert ids(spread_over_libraries(tasks, 10)) == ["a-1", "b-1", "c-1", "a-2", "b-2", "b-3"]
    assert ids(spread_over_libraries(tasks, None)) == ids(tasks)


def test_reward_curve_rises_only_when_the_interval_clears_zero(tmp_path):
    assert reward_curve([0.0, 0.25, 0.0, 0.75, 1.0, 0.75])["rises"] is True
    flat = reward_curve([0.5, 0.0, 1.0, 0.5, 0.0, 1.0])
    assert flat["rises"] is False and flat["ci_low"] < 0 < flat["ci_high"]
    assert "note" in reward_curve([0.1, 0.2])
    stats = bootstrap_diff([0.0, 0.0], [1.0, 1.0])
    assert stats["diff"] == stats["ci_low"] == stats["ci_high"] == 1.0
    with pytest.raises(ValueError):
        bootstrap_diff([], [1.0])
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "reward_mean": 0.5}\n{"step": 1, "event": "resumed"}\n{"step": 2, "reward_mean": 1}\n')
    assert step_rewards(metrics) == [0.5, 1.0]


def test_reward_curve_resamples_episodes_when_the_rollouts_are_at_hand(tmp_path):
    # Per-step means 0.25 0.25 0.25 | 0.5 0.5 0.5 with 8 episodes a step: resampling the 3
    # means a side sees no spread at all, resampling the 24 episodes a side sees the real one.
    rollouts = tmp_path / "rollouts"
    rollouts.mkdir()
    episodes = [[1.0, 1.0] + [0.0] * 6] * 3 + [[1.0] * 4 + [0.0] * 4] * 3
    for step, rewards in enumerate(episodes, 1):
        rows = [{"reward": r, "error": None} for r in rewards] + [{"reward": 0.0, "error": "sandbox_died"}]
        (rollouts / f"step-{step:06d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert episode_rewards(rollouts) == episodes  # the failed episode is not a reward sample
    by_step = reward_curve([0.25] * 3 + [0.5] * 3)
    by_episode = reward_curve([0.25] * 3 + [0.5] * 3, episodes=episode_rewards(rollouts))
    assert by_step["unit"] == "step" and by_step["ci_low"] == by_step["ci_high"] == 0.25
    assert by_episode["unit"] == "episode" and by_episode["first_episodes"] == by_episode["last_episodes"] == 24
    assert by_episode["diff"] == pytest.approx(0.25)
    assert by_episode["ci_low"] < 0.1 < 0.4 < by_episode["ci_high"]
    with pytest.raises(ValueError, match="5 steps of episode rewards for 6"):
        reward_curve([0.25] * 6, episodes=episodes[:5])


def test_before_after_lines_show_every_stage_and_split():
    stage = lambda solved: {"solved": solved, "samples": 4, "pass_at_k": {"1": solved / 4}}  # noqa: E731
    summary = {"stages": {"base": {"train": stage(0), "heldout": stage(0)}, "sft": {"train": stage(1), "heldout": stage(0)},
                          "rl": {"train": stage(3), "heldout": stage(1)}},
               "rl_reward_curve": reward_curve([0.0, 0.25, 0.0, 0.75, 1.0, 0.75])}
    lines = before_after_lines(summary)
    assert lines[0] == "RL reward per step: 0.00 0.25 0.00 0.75 1.00 0.75"
    assert lines[1].startswith("RL reward, last 3 steps vs first 3: 0.08 → 0.83 (+0.75, 95% bootstrap")
    assert lines[2] == "solve rate on train tasks, before → after: base 0/4 (0%) → SFT 1/4 (25%) → SFT+RL 3/4 (75%)"
    assert lines[3].endswith("SFT+RL 1/4 (25%)")


def test_finished_checkpoint_needs_the_final_step(tmp_path):
    for step in (2, 4):
        (tmp_path / f"step-{step:06d}").mkdir()
        (tmp_path / f"step-{step:06d}" / "COMPLETE").write_text("")
    (tmp_path / ".step-000006.tmp-1").mkdir()  # a save cut short is not a checkpoint
    assert finished_checkpoint(tmp_path, 6) is None
    assert finished_checkpoint(tmp_path, 4) == tmp_path / "step-000004" / "model"
    assert finished_checkpoint(tmp_path / "missing", 1) is None


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_tiny_real_pipeline_runs_every_stage_and_a_rerun_resumes(tmp_path, capsys):
    out = tmp_path / "pipe"
    argv = ["pipeline", "--config", str(ROOT / "configs" / "learn-cpu.yaml"), f"output_dir={out}",
            "train.tasks.ids=[semvertools-001-floor]", "train.rollout.tasks_per_step=1", "train.rollout.group_size=2",
            "train.algorithm.mini_batch_size=2", "train.algorithm.micro_batch_size=2", "train.max_steps=1",
            "train.agent.max_turns=2", "train.env.max_turns=2", "train.agent.max_tokens_per_turn=128",
            "train.logging.tensorboard=false",
            "sft.max_steps=2", "sft.batch_size=1",
            # the recipe demonstrates 24 tasks of two other libraries and evaluates a held-out split: too slow here
            "demos.tasks=null", "demos.exclude_train_tasks=false", "eval.heldout=null"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"base", "sft", "rl"}
    for stage in ("base", "sft", "rl"):
        assert summary["stages"][stage]["train"]["samples"] == 1
        assert (out / f"eval-{stage}-train" / "results.jsonl").read_text().count("\n") == 1
    assert json.loads((out / "demos" / "report.json").read_text())["kept"] == 1
    assert len(summary["rl_reward_curve"]["rewards"]) == 1
    assert (out / "rl" / "checkpoints" / "step-000001" / "model" / "config.json").is_file()
    assert "solve rate on train tasks, before → after: base " in printed and "[6/7] rl step 1/1" in printed
    # The RL run started from the SFT checkpoint, not from the base model.
    rl_config = (out / "rl" / "config.yaml").read_text()
    assert str(out / "sft" / "checkpoints" / "step-000002" / "model") in rl_config

    # A re-run redoes nothing: finished stages are skipped, evals find their samples.
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "sft: finished earlier" in again and "rl: finished earlier" in again
    for stage in ("base", "sft", "rl"):
        assert (out / f"eval-{stage}-train" / "results.jsonl").read_text().count("\n") == 1
    assert json.loads((out / "summary.json").read_text())["stages"] == summary["stages"]

    # A changed RL setting redoes RL and its eval, not the stages above it; the old RL run is
    # kept beside, not deleted.
    assert main([*argv, "train.optim.lr=2e-5"]) == 0
    changed = capsys.readouterr().out
    assert "rl: settings changed since it ran (optim.lr)" in changed, changed
    assert "sft: finished earlier" in changed and "rl: finished earlier" not in changed
    assert "[6/7] rl step 1/1" in changed and "eval-rl-train: settings changed" in changed
    assert [p.name for p in out.glob("rl.stale-*")] and [p.name for p in out.glob("eval-rl-train.stale-*")]
    assert not list(out.glob("sft.stale-*")) and not list(out.glob("eval-sft-train.stale-*"))
    assert (out / "eval-rl-train" / "results.jsonl").read_text().count("\n") == 1

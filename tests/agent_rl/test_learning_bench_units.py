"""The learning benchmark's pure parts: task subsets that span libraries and stay in their
split, and overrides that turn the main job's recipe into the benchmark's (the curve
statistics are tested with the pipeline, tests/agent_rl/test_pipeline.py)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from envs.suites.splits import SPLITS

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "learning_bench.py"
_spec = importlib.util.spec_from_file_location("learning_bench", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_task_subsets_span_libraries_and_stay_in_their_split():
    train = bench.pick_tasks("floor", "train", 5)
    assert [t.instance_id.split("-")[0] for t in train][:4] == sorted(SPLITS["train"])
    assert all(t.instance_id.endswith("-floor") for t in train)
    heldout = bench.pick_tasks("floor", "heldout", 3)
    assert {t.instance_id.split("-")[0] for t in heldout} <= set(SPLITS["heldout"])


def test_the_benchmark_is_the_main_job_recipe_at_size_and_its_overrides_validate(tmp_path):
    from agent_rl.recipes import load_config
    from agent_rl.train.pipeline import PipelineConfig

    args = bench.main.__globals__["argparse"].Namespace(
        model="smollm2-135m", tier="floor", tasks_limit=5, heldout_limit=3, samples=4, temperature=1.0,
        sft_steps=3, sft_lr=1e-4, rl_steps=8, rl_lr=1e-5, group_size=2, tasks_per_step=4, rl_temperature=None,
        demos="others", demo_libraries=0)
    overrides = bench.pipeline_overrides(args, tmp_path)
    config = load_config(PipelineConfig, bench.REPO / "configs" / "learn-cpu.yaml", overrides)
    assert len(config.train.tasks.ids) == 5 and config.train.rollout.tasks_per_step == 4
    assert config.train.batch_size == config.train.algorithm.mini_batch_size == 8
    assert (config.eval.samples, config.eval.temperature, config.train.max_steps) == (4, 1.0, 8)
    heldout = [json.loads(line)["instance_id"] for line in Path(config.eval.heldout).read_text().splitlines()]
    assert len(heldout) == 3 and not set(heldout) & set(config.train.tasks.ids)
    assert config.eval.heldout_limit == 3  # the recipe's own limit does not cut the bench's subset
    # --demos others: the rest of the train split, the RL tasks left out; --demos train: the RL tasks.
    assert (config.demos.tasks, config.demos.exclude_train_tasks) == ("builtin:floor:train", True)
    args.demos = "train"
    config = load_config(PipelineConfig, bench.REPO / "configs" / "learn-cpu.yaml", bench.pipeline_overrides(args, tmp_path))
    assert (config.demos.tasks, config.demos.exclude_train_tasks) == (None, False)
    # --demos other-libraries (the default, the main job's split): the expert shows half the
    # train libraries, the RL tasks come from the other half.
    args.demos = "other-libraries"
    config = load_config(PipelineConfig, bench.REPO / "configs" / "learn-cpu.yaml", bench.pipeline_overrides(args, tmp_path))
    shown = {json.loads(line)["instance_id"].split("-")[0] for line in Path(config.demos.tasks).read_text().splitlines()}
    unseen = {i.split("-")[0] for i in config.train.tasks.ids}
    assert shown and unseen and not shown & unseen and shown | unseen == set(SPLITS["train"])
    assert len(shown) == len(unseen)  # --demo-libraries 0: half
    # --demo-libraries 3 (the main job's split): three libraries shown, RL on the fourth.
    args.demo_libraries = 3
    config = load_config(PipelineConfig, bench.REPO / "configs" / "learn-cpu.yaml", bench.pipeline_overrides(args, tmp_path))
    shown = {json.loads(line)["instance_id"].split("-")[0] for line in Path(config.demos.tasks).read_text().splitlines()}
    assert len(shown) == 3 and {i.split("-")[0] for i in config.train.tasks.ids} == set(SPLITS["train"]) - shown
    args.demo_libraries = 4
    with pytest.raises(SystemExit, match="--demo-libraries must be 1..3"):
        bench.pipeline_overrides(args, tmp_path)
    args.demo_libraries = 0
    # Default: every train task each step; --rl-temperature overrides the recipe's sampling.
    args.tasks_per_step, args.rl_temperature = 0, 1.0
    config = load_config(PipelineConfig, bench.REPO / "configs" / "learn-cpu.yaml", bench.pipeline_overrides(args, tmp_path))
    assert config.train.rollout.tasks_per_step == 5 and config.train.agent.sampling.temperature == 1.0

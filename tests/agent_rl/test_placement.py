"""`--dry-run` sizes each recipe against the hardware its `placement:` states."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent_rl.train.config import load_train_config
from agent_rl.train.placement import PlacementError, check_placement, count_parameters

REPO = Path(__file__).resolve().parents[2]
TRAIN_RECIPES = sorted(p for p in (REPO / "configs").glob("*.yaml")
                       if p.read_text().startswith("# agent-rl train"))


@pytest.mark.parametrize("recipe", TRAIN_RECIPES, ids=lambda p: p.stem)
def test_every_training_recipe_states_hardware_that_fits(recipe):
    text = recipe.read_text()
    assert "placement:" in text and "Hardware:" in text, f"{recipe.name} must state the hardware it needs"
    done = subprocess.run([sys.executable, "-m", "agent_rl.cli", "train", "--config", str(recipe), "--dry-run"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "# placement:" in done.stdout and "config is valid" in done.stdout


def test_the_72b_recipe_does_not_fit_one_node_and_says_what_to_change():
    config = load_train_config(REPO / "configs" / "nebius-swe-72b.yaml", ["placement.nodes=1"])
    with pytest.raises(PlacementError, match=r"about 68 GiB per GPU.*add ranks.*cpu_offload"):
        check_placement(config)
    offloaded = load_train_config(REPO / "configs" / "nebius-swe-72b.yaml",
                                  ["placement.nodes=1", "distributed.cpu_offload=true"])
    assert check_placement(offloaded).total_gib == 0  # the shards live in host memory


def test_estimate_follows_the_formula():
    config = load_train_config(REPO / "configs" / "swe-dapo-7b.yaml",
                               ["lora.enabled=false", "placement.gpus_per_node=4", "algorithm.kl_beta=0.01"])
    report = check_placement(config, params=8e9)
    gib = 1024**3
    assert report.per_gpu_gib["policy (params+grads+adam)"] == pytest.approx(8e9 * 2 * 4 / 4 / gib)
    assert report.per_gpu_gib["reference"] == pytest.approx(8e9 * 2 / 4 / gib)
    assert "vllm engine" not in report.per_gpu_gib  # sleep mode frees it during the update
    awake = load_train_config(REPO / "configs" / "swe-dapo-7b.yaml", ["engine.enable_sleep_mode=false"])
    assert check_placement(awake, params=8e9).per_gpu_gib["vllm engine"] == pytest.approx(0.5 * 80)


def test_lora_over_several_ranks_is_refused():
    config = load_train_config(REPO / "configs" / "swe-dapo-7b.yaml", ["placement.gpus_per_node=8"])
    with pytest.raises(PlacementError, match="LoRA trains in one process"):
        check_placement(config, params=7e9)


def test_parameters_are_counted_without_loading_weights():
    import torch

    from agent_rl.engines.models import load_model

    model, _ = load_model("smollm2-135m", device="cpu", dtype=torch.float32)
    assert count_parameters("smollm2-135m") == sum(p.numel() for p in model.parameters())

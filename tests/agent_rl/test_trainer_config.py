"""Recipes validate; `agent-rl train` rejects bad keys and impossible batch geometry clearly."""
from __future__ import annotations

from pathlib import Path

import pytest

from agent_rl.cli import main
from agent_rl.train.config import load_train_config, parse_override
from strictconfig import ConfigError

ALL_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
# Training recipes; the others name their own command on their first line (configs/learn-cpu.yaml:
# agent-rl pipeline; test_config_tree.py validates every recipe against its command's tree).
CONFIGS = [p for p in ALL_CONFIGS if p.read_text().startswith("# agent-rl train ")]
RECIPES = ("smoke-cpu.yaml", "demo-cpu.yaml", "swe-dapo-7b.yaml", "nebius-swe-72b.yaml")


def test_every_recipe_exists_validates_and_shows_its_launch_command():
    names = {p.name for p in CONFIGS}
    assert set(RECIPES) <= names
    assert all(p.read_text().startswith("# agent-rl ") for p in ALL_CONFIGS)
    for path in CONFIGS:
        load_train_config(path)
        assert path.read_text().startswith(f"# agent-rl train --config configs/{path.name}")


def test_overrides_are_parsed_as_yaml():
    assert parse_override("algorithm.kl_beta=0.01") == ("algorithm.kl_beta", 0.01)
    assert parse_override("lora.enabled=true") == ("lora.enabled", True)
    assert parse_override("algorithm.dual_clip_c=null") == ("algorithm.dual_clip_c", None)
    config = load_train_config(CONFIGS[0], ["algorithm.kl_beta=0.01", "rollout.group_size=4"])
    assert config.algorithm.kl_beta == 0.01 and config.rollout.group_size == 4
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("algorithm.kl_beta")


@pytest.mark.parametrize(
    "override, message",
    [
        ("algorithm.mini_batch_size=3", "multiple of micro_batch_size"),
        ("algorithm.micro_batch_size=8", "micro_batch_size (8) must be <= mini_batch_size"),
        ("rollout.group_size=3", "not a multiple of algorithm.mini_batch_size"),
        ("algorithm.eps_hihg=0.3", "did you mean 'eps_high'"),
        ("algorithm.loss_aggregation=mean", "not one of token-mean"),
        ("optim.lr=fast", "optim.lr must be a number"),
        ("agent.sampling.temperature=0", "temperature must be > 0"),
        ("env.max_turn=3", "did you mean 'max_turns'"),
        ("engine.kind=openai", "base_url is required"),
    ],
)
def test_bad_configs_are_rejected_with_a_clear_message(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_train_config(Path("configs/smoke-cpu.yaml"), [override])


def test_cli_prints_resolved_config_and_rejects_unknown_keys(capsys):
    assert main(["train", "--config", "configs/smoke-cpu.yaml", "--dry-run", "max_steps=7"]) == 0
    out = capsys.readouterr().out
    assert "max_steps: 7" in out and "config is valid" in out and "rollout batch: 2 tasks × 2 samples" in out
    assert main(["train", "--config", "configs/smoke-cpu.yaml", "--dry-run", "algorithm.bogus=1"]) == 2
    assert "unknown key(s) 'bogus'" in capsys.readouterr().err

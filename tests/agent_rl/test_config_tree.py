"""One config system: typed trees, errors that name the key, shared CLI form, exported schema."""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from agent_rl.cli import main
from agent_rl.engines.factory import EngineConfig
from agent_rl.eval.evaluate import EvalConfig
from agent_rl.recipes import dump_yaml, json_schema, load_config, parse_override, set_dotted
from agent_rl.rollout.agent import AgentConfig
from agent_rl.rollout.run_config import RolloutRunConfig
from agent_rl.train.config import TrainConfig, load_train_config
from agent_rl.train.pipeline import PipelineConfig
from agent_rl.train.sft_config import SFTConfig
from envs.swe_env import EnvConfig
from sandboxes.docker import DockerSandboxConfig
from strictconfig import ConfigError

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))
SMOKE = ROOT / "configs" / "smoke-cpu.yaml"
TREES = {"train": TrainConfig, "eval": EvalConfig, "rollout": RolloutRunConfig, "sft": SFTConfig,
         "pipeline": PipelineConfig}


@pytest.mark.parametrize(
    "override, message",
    [
        ("max_step=3", "top level: unknown key(s) 'max_step' (did you mean 'max_steps'?)"),
        ("algorithm.eps_hihg=0.3", "algorithm: unknown key(s) 'eps_hihg' (did you mean 'eps_high'?)"),
        ("agent.sampling.temperatur=0.5", "agent.sampling: unknown key(s) 'temperatur' (did you mean 'temperature'?)"),
        ("env.grading.scan_patches=false", "env.grading: unknown key(s) 'scan_patches' (did you mean 'scan_patch'?)"),
        ("env.grading.sandbox.netwrok=bridge", "env.grading.sandbox: unknown key(s) 'netwrok' (did you mean 'network'?)"),
        ("algorithm.reference_reset.evry=3", "algorithm.reference_reset: unknown key(s) 'evry' (did you mean 'every'?)"),
    ],
)
def test_unknown_keys_at_every_depth_name_the_path_and_a_close_match(override, message):
    with pytest.raises(ConfigError) as info:
        load_train_config(SMOKE, [override])
    assert message in str(info.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("agent.max_turns=true", "agent.max_turns must be an integer, got True"),
        ("env.max_turns='3'", "env.max_turns must be an integer, got '3'"),
        ("env.sandbox.cpus=lots", "env.sandbox.cpus must be a number, got 'lots'"),
        ("lora.enabled=maybe", "lora.enabled must be true/false, got 'maybe'"),
        ("env.max_turns=0", "env.max_turns must be >= 1, got 0"),
        ("env.sandbox.pids_limit=0", "env.sandbox.pids_limit must be positive (> 0), got 0"),
        ("engine.kind=tgi", "engine.kind 'tgi' is not one of hf, openai, vllm"),
        ("env.sandbox.mem_limit=lots", "env.sandbox.mem_limit: must look like '512m' or '2g'"),
        ("env=3", "env must be a mapping, got 3"),
        ("algorithm.dual_clip_c=0.5", "algorithm.dual_clip_c must be > 1, got 0.5"),
    ],
)
def test_wrong_types_and_out_of_range_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_train_config(SMOKE, [override])
    assert message in str(info.value)


def test_bad_recipe_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("algorithm:\n  kl_beta: [0.1\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_train_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- max_steps: 3\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_train_config(listed)
    typo = tmp_path / "typo.yaml"
    typo.write_text("env:\n  sandbox:\n    memlimit: 4g\n")
    with pytest.raises(ConfigError, match=r"env\.sandbox: unknown key\(s\) 'memlimit' \(did you mean 'mem_limit'\?\)"):
        load_train_config(typo)


def test_override_parsing_and_precedence():
    assert parse_override("agent.stop=['</s>', END]") == ("agent.stop", ["</s>", "END"])
    assert parse_override("env.sandbox={network: none}") == ("env.sandbox", {"network": "none"})
    assert parse_override("output_dir=") == ("output_dir", "")
    assert parse_override(" tasks.source = builtin ") == ("tasks.source", "builtin")
    with pytest.raises(ConfigError, match="empty key"):
        parse_override("=3")
    data: dict = {"env": {"max_turns": 2}}
    set_dotted(data, "env.sandbox.mem_limit", "4g")
    assert data == {"env": {"max_turns": 2, "sandbox": {"mem_limit": "4g"}}}
    with pytest.raises(ConfigError, match="'env.max_turns' is not a section"):
        set_dotted(data, "env.max_turns.x", 1)
    # recipe < flag shortcuts < key=value overrides; a None shortcut is a flag not given.
    config = load_config(TrainConfig, SMOKE, ["max_steps=5"], shortcuts={"max_steps": 4, "seed": 9, "output_dir": None})
    assert (config.max_steps, config.seed, config.output_dir) == (5, 9, "runs/smoke-cpu")


def test_sections_are_typed_and_parsed_once():
    config = load_train_config(SMOKE, ["env.sandbox.mem_limit=4g"])
    assert isinstance(config.env, EnvConfig) and isinstance(config.agent, AgentConfig)
    assert isinstance(config.engine, EngineConfig) and isinstance(config.env.sandbox, DockerSandboxConfig)
    assert config.env.sandbox.mem_limit == "4g" and config.env.max_turns == 2


def test_sandbox_workdir_follows_the_task_unless_set_and_survives_a_round_trip():
    unset = EnvConfig().sandbox
    assert unset.for_task_workdir("/repo").workdir == "/repo"
    assert "workdir" not in unset.model_dump()
    pinned = EnvConfig.from_config({"sandbox": {"workdir": "/testbed"}}).sandbox
    assert pinned.for_task_workdir("/repo").workdir == "/testbed"
    again = TrainConfig.from_config(yaml.safe_load(yaml.safe_dump(TrainConfig().to_dict())))
    assert "workdir" not in again.env.sandbox.model_fields_set and again == TrainConfig()


PRINT_ARGV = {
    "train": ["train", "--config", str(SMOKE), "max_steps=4"],
    "eval": ["eval", "--model", "smollm2-135m", "--tasks", "builtin:easy", "--out", "runs/e", "--max-turns", "3",
             "--engine", "openai", "--base-url", "http://127.0.0.1:9", "--engine-opt", "timeout_s=30"],
    "rollout": ["rollout", "--tasks", "builtin:easy", "--out", "runs/r", "--max-turns", "3", "--group-size", "2"],
}


@pytest.mark.parametrize("command", sorted(PRINT_ARGV))  # the agent commands; sft: test_sft.py
def test_print_config_shows_the_resolved_tree_which_loads_back(command, capsys):
    assert main([*PRINT_ARGV[command], "agent.max_tokens_per_turn=77", "--print-config"]) == 0
    out = capsys.readouterr().out
    printed = yaml.safe_load(out)
    assert printed["agent"]["max_tokens_per_turn"] == 77
    assert dump_yaml(TREES[command].from_config(printed)) == out  # a valid recipe, stable under reloading
    if command == "train":
        assert printed["max_steps"] == 4 and printed["env"]["max_turns"] == 2
    else:  # the flag is a shortcut for both limits, and the engine serves the top-level model
        assert printed["agent"]["max_turns"] == printed["env"]["max_turns"] == 3
        assert printed["engine"]["model"] == "smollm2-135m"
    if command == "eval":
        assert printed["engine"]["kind"] == "openai" and printed["engine"]["timeout_s"] == 30
    if command == "rollout":
        assert printed["rollout"]["group_size"] == 2 and RolloutRunConfig(tasks="t", out="o").rollout.group_size == 1


def test_every_command_reports_bad_config_the_same_way(capsys, tmp_path):
    assert main(["rollout", "--tasks", "builtin:easy", "--out", str(tmp_path), "env.max_turn=2", "--print-config"]) == 2
    assert "agent-rl rollout: invalid config: env: unknown key(s) 'max_turn' (did you mean 'max_turns'?)" in capsys.readouterr().err
    assert main(["eval", "--tasks", "builtin:easy", "--out", str(tmp_path), "--print-config"]) == 2
    assert "model is required" in capsys.readouterr().err
    assert main(["eval", "--model", "m", "--tasks", "t", "--out", "o", "--samples", "2", "--k", "4", "--print-config"]) == 2
    assert "exceed --samples 2" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(TREES))
def test_exported_schema_is_current(command, capsys):
    assert main([command, "--print-schema"]) == 0
    exported = json.loads(capsys.readouterr().out)
    committed = json.loads((ROOT / "configs" / "schema" / f"{command}.schema.json").read_text())
    assert exported == committed == json_schema(TREES[command]), (
        f"regenerate: agent-rl {command} --print-schema > configs/schema/{command}.schema.json")
    jsonschema.Draft202012Validator.check_schema(exported)
    undocumented = [name for name, sub in exported["$defs"].items() if not sub.get("description")]
    assert exported.get("description") and not undocumented  # every config model has a docstring


def test_every_recipe_validates_against_the_exported_schema_and_the_model():
    assert RECIPES
    for path in RECIPES:
        # Each recipe names its command's schema in its header (editors validate with it).
        command = re.search(r"\$schema=schema/(\w+)\.schema\.json", path.read_text()).group(1)
        schema = json.loads((ROOT / "configs" / "schema" / f"{command}.schema.json").read_text())
        data = yaml.safe_load(path.read_text())
        assert not list(jsonschema.Draft202012Validator(schema).iter_errors(data)), path
        TREES[command].from_config(data)
    validator = jsonschema.Draft202012Validator(json.loads((ROOT / "configs" / "schema" / "train.schema.json").read_text()))
    bad = yaml.safe_load(SMOKE.read_text())
    bad["env"]["sandbox"] = {"netwrok": "bridge"}
    assert any("netwrok" in e.message for e in validator.iter_errors(bad))


def test_exponent_floats_without_a_dot_are_numbers_in_overrides_and_files(tmp_path):
    # YAML 1.1 reads `1e-4` as a string; a recipe must not fail with "must be a number".
    assert parse_override("optim.lr=1e-4") == ("optim.lr", 1e-4)
    assert parse_override("optim.lr=-2E+3") == ("optim.lr", -2000.0)
    assert parse_override("x=1.5e-5")[1] == 1.5e-5
    assert parse_override("x=e5") == ("x", "e5")  # not a number: stays text
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: 3e-5\n")
    assert load_config(TrainConfig, recipe, ["algorithm.kl_beta=1e-3"]).optim.lr == 3e-5
    assert load_config(SFTConfig, None, ["optim.lr=1e-4"]).optim.lr == 1e-4


def test_a_step_deadline_in_async_mode_is_refused_not_ignored():
    with pytest.raises(ConfigError, match="remove rollout.step_deadline"):
        load_train_config(None, ["algorithm.mode=async", "rollout.step_deadline.after_fraction=0.8"])
    load_train_config(None, ["algorithm.mode=async", "rollout.episode_deadline_s=600"])

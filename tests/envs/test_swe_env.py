"""SWEEnv end to end on real containers, plus the pure parts (config, spaces) without Docker."""
from __future__ import annotations

import asyncio
import json

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env
from tinytask import F2P, make_tiny_task

import envs  # noqa: F401  (registers agent_rl/SWE-v0)
from envs.swe_env import EnvConfig, SWEEnv
from envs.text_space import text_space, to_space_text
from envs.tasks import TaskError
from strictconfig import ConfigError

FIX_EDIT = (
    "The bug is in add.\n```edit calc/ops.py\n<<<<<<< SEARCH\ndef add(a, b):\n    return a - b\n"
    "=======\ndef add(a, b):\n    return a + b\n>>>>>>> REPLACE\n```"
)
SUBMIT = "Done.\n```submit\n```"


def tool(name: str, **arguments: object) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return make_tiny_task(tmp_path_factory.mktemp("env"))


# ---------------------------------------------------------------- no Docker needed


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="max_turn.*did you mean 'max_turns'"):
        EnvConfig.from_config({"max_turn": 3}, "env")
    with pytest.raises(ConfigError, match="action_format"):
        EnvConfig(action_format="xml")
    with pytest.raises(ConfigError, match="reward"):
        EnvConfig(reward="dense")
    with pytest.raises(ConfigError, match="max_turns"):
        EnvConfig(max_turns=0)
    with pytest.raises(ConfigError, match="problem_statement"):
        EnvConfig(instructions="no placeholder")
    with pytest.raises(ConfigError, match="grading.*unknown key"):
        SWEEnv(tasks=[], config={"grading": {"bogus": 1}})


def test_bad_sandbox_keys_fail_at_construction(task):
    with pytest.raises(ConfigError, match="sandbox: unknown key.*'netwrok'.*did you mean 'network'"):
        SWEEnv(tasks=[task], config={"sandbox": {"netwrok": "bridge"}})
    with pytest.raises(ConfigError, match="sandbox: unknown key.*'mem'"):
        SWEEnv(tasks=[task], config={"grading": {"sandbox": {"mem": "1g"}}})


def test_env_construction_errors_name_the_problem(task):
    with pytest.raises(TaskError, match="at least one task"):
        SWEEnv(tasks=[])
    env = SWEEnv(tasks=[task])
    with pytest.raises(TaskError, match="no task 'nope'"):
        env.reset(options={"task": "nope"})
    with pytest.raises(RuntimeError, match="reset"):
        env.step("```bash\nls\n```")


def test_text_spaces_hold_any_observation():
    space = text_space()
    assert space.contains("tab\there\nnewline \x1b[31m ansi \ufffd é 中")
    assert space.contains(to_space_text("emoji 😀 outside the BMP"))
    assert not space.contains("😀")
    assert text_space() is not space and text_space().character_set is space.character_set


# ---------------------------------------------------------------- real containers

@pytest.mark.docker
def test_check_env_passes(task):
    env = SWEEnv(tasks=[task], config={"max_turns": 3})
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


@pytest.mark.docker
def test_gold_fix_through_gymnasium_make_scores_one(task):
    env = gymnasium.make("agent_rl/SWE-v0", tasks=[task], config={"max_turns": 10}, render_mode="ansi")
    try:
        obs, info = env.reset(seed=1)
        assert task.problem_statement in obs and "```edit" in obs
        assert info["task_id"] == task.instance_id and info["max_turns"] == 10
        obs, reward, terminated, truncated, info = env.step("```bash\ncat calc/ops.py && ls tests\n```")
        assert "return a - b" in obs and "test_issue_add.py" not in obs and "[exit code 0]" in obs
        assert (reward, terminated, truncated) == (0.0, False, False)
        obs, reward, *_ = env.step(FIX_EDIT)
        assert "return a + b" in obs and reward == 0.0
        assert "+    return a + b" in env.unwrapped.get_patch()
        obs, reward, terminated, truncated, info = env.step(SUBMIT)
        assert (reward, terminated, truncated) == (1.0, True, False)
        grade = info["grade"]
        assert grade["resolved"] and grade["tests_status"]["FAIL_TO_PASS"]["success"] == F2P
        assert info["end_reason"] == "submitted" and "return a + b" in info["patch"]
        assert env.render() == obs
    finally:
        env.close()


@pytest.mark.docker
def test_no_change_scores_zero_and_malformed_actions_do_not_end_the_episode(task):
    with SWEEnv(tasks=[task]) as env:
        env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step("I will just think about it.")
        assert "Format error" in obs and info["format_error"] and not (terminated or truncated)
        obs, *_ = env.step("```bash\nls\n```\n```bash\npwd\n```")
        assert "2 action blocks" in obs
        obs, reward, terminated, truncated, info = env.step("<submit/>")
        assert (reward, terminated, truncated) == (0.0, True, False)
        assert not info["grade"]["resolved"] and info["patch"] == ""


@pytest.mark.docker
def test_truncation_by_max_turns_is_graded(task):
    with SWEEnv(tasks=[task], config={"max_turns": 2}) as env:
        env.reset(options={"task": task.instance_id})
        assert env.step(FIX_EDIT)[1:4] == (0.0, False, False)
        obs, reward, terminated, truncated, info = env.step("```bash\nls\n```")
        assert (reward, terminated, truncated) == (1.0, False, True)
        assert info["end_reason"] == "max_turns" and info["grade"]["resolved"]


@pytest.mark.docker
def test_observation_budget_and_finish_truncate(task):
    with SWEEnv(tasks=[task], config={"observation_budget": 100, "max_observation_chars": 60}) as env:
        env.reset(options={"task": task})
        obs, reward, terminated, truncated, info = env.step("```bash\nseq 1 1000\n```")
        assert "characters omitted" in obs and truncated and info["end_reason"] == "observation_budget"
        assert reward == 0.0 and "grade" in info
    with SWEEnv(tasks=[task]) as env:
        env.reset(options={"task": task})
        env.step(FIX_EDIT)
        obs, reward, terminated, truncated, info = env.finish("context")
        assert (reward, terminated, truncated) == (1.0, False, True) and info["end_reason"] == "context"


@pytest.mark.docker
def test_json_tools_timeouts_and_edit_errors(task):
    config = {"action_format": "json", "command_timeout_s": 2, "reward": "fraction"}
    with SWEEnv(tasks=[task], config=config) as env:
        obs, _ = env.reset()
        assert "<tool_call>" in obs
        obs = env.step(tool("view", path="calc/ops.py", view_range=[4, 5]))[0]
        assert obs == "4\tdef add(a, b):\n5\t    return a - b"
        obs = env.step(tool("str_replace", path="calc/ops.py", old_str="return a - b", new_str="x"))[0]
        assert "occurs 2 times" in obs and "lines 5, 9" in obs
        obs = env.step(tool("view", path="missing.py"))[0]
        assert "does not exist" in obs
        obs = env.step(tool("view", path="calc"))[0]
        assert "not a readable file" in obs and "ops.py" in obs
        obs = env.step(tool("bash", command="sleep 30"))[0]
        assert "timed out after 2s" in obs
        obs = env.step(tool("create", path="pkg2/data.bin.txt", content="α\n"))[0]
        assert "Wrote 1 lines" in obs
        obs = env.step(tool("bash", command="cat pkg2/data.bin.txt && stat -c %U pkg2/data.bin.txt"))[0]
        assert "α" in obs and "agent" in obs  # files the model creates stay editable by it
        # A binary file: the diff must carry it and the grader must apply it.
        env.step(tool("bash", command="printf '\\x00\\x01\\xff' > blob.bin"))
        patch = env.get_patch()
        assert "GIT binary patch" in patch and "pkg2/data.bin.txt" in patch
        _, reward, terminated, _, info = env.step(tool("submit"))
        assert terminated and info["grade"]["patch_successfully_applied"]
        assert reward == 0.0  # fraction reward counts FAIL_TO_PASS only: the bug is not fixed


@pytest.mark.docker
async def test_async_twins_drive_episodes_concurrently(task):
    async def episode(fix: bool) -> float:
        env = SWEEnv(tasks=[task])
        try:
            await env.areset(seed=0)
            if fix:
                await env.astep(FIX_EDIT)
            await env.astep("```bash\npython3 -c 'import calc.ops as o; print(o.add(2, 3))'\n```")
            _, reward, terminated, _, _ = await env.astep(SUBMIT)
            assert terminated
            return reward
        finally:
            await env.aclose()

    rewards = await asyncio.gather(*(episode(fix) for fix in (True, False, True, False)))
    assert rewards == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.docker
def test_sync_vector_env(task):
    vec = gymnasium.vector.SyncVectorEnv([lambda: SWEEnv(tasks=[task], config={"max_turns": 5})] * 2)
    try:
        observations, infos = vec.reset(seed=3)
        assert len(observations) == 2 and all(task.problem_statement in o for o in observations)
        observations, rewards, terminated, truncated, infos = vec.step(("```bash\nls\n```", SUBMIT))
        assert list(terminated) == [False, True] and list(rewards) == [0.0, 0.0]
        assert "calc" in observations[0]
    finally:
        vec.close()


@pytest.mark.docker
def test_pooled_sandboxes_do_not_leak_between_episodes(task):
    with SWEEnv(tasks=[task], config={"use_pool": True, "pool_size": 1}) as env:
        env.reset(options={"task": task})
        assert "[exit code 0]" in env.step("```bash\ntouch leak.txt\n```")[0]
        env.reset(options={"task": task})
        obs = env.step("```bash\nls leak.txt\n```")[0]
        assert "No such file" in obs and "[exit code 2]" in obs


@pytest.mark.docker
@pytest.mark.slow
def test_async_vector_env_without_shared_memory(task):
    # Text observations travel through pipes: gymnasium's shared-memory path for Text
    # spaces came back as NUL padding in our trials, so shared_memory=False is the supported mode.
    vec = gymnasium.vector.AsyncVectorEnv([lambda: SWEEnv(tasks=[task])] * 2, shared_memory=False)
    try:
        observations, _ = vec.reset(seed=0)
        assert all(task.problem_statement in o for o in observations)
        observations, rewards, terminated, _, _ = vec.step(("```bash\necho héllo 中\n```", SUBMIT))
        assert observations[0] == "héllo 中\n[exit code 0]" and list(terminated) == [False, True]
    finally:
        vec.close()


@pytest.mark.docker
def test_a_dead_sandbox_ends_the_episode_as_truncated_and_graded(task):
    import docker

    with SWEEnv(tasks=[task]) as env:
        env.reset()
        client = docker.from_env()
        try:
            client.containers.get(env.sandbox.container_id).kill()
        finally:
            client.close()
        obs, reward, terminated, truncated, info = env.step("```bash\nls\n```")
        assert (reward, terminated, truncated) == (0.0, False, True)
        assert info["end_reason"] == "sandbox_died" and info["sandbox_error"] and "grade" in info


@pytest.mark.docker
def test_wall_clock_limit_truncates(task):
    with SWEEnv(tasks=[task], config={"max_time_s": 2}) as env:
        env.reset()
        obs, reward, terminated, truncated, info = env.step("```bash\nsleep 5\n```")
        assert "timed out" in obs and truncated and info["end_reason"] == "max_time"


@pytest.mark.docker
def test_tampering_outside_the_diff_does_not_survive_into_grading(task):
    """User-site hooks, env vars, commits and tags in the agent's container are not the patch."""
    hook = "import _pytest.reports as r; r.TestReport.passed = property(lambda self: True)"
    script = (
        "mkdir -p $(python3 -m site --user-site) && "
        f"echo '{hook}' > $(python3 -m site --user-site)/usercustomize.py && "
        "export PYTHONPATH=/tmp && echo 'import sys' > /tmp/sitecustomize.py && "
        "git commit -qam wip --allow-empty && git tag v-fake && echo ok"
    )
    with SWEEnv(tasks=[task]) as env:
        env.reset()
        assert "ok" in env.step(f"```bash\n{script}\n```")[0]
        _, reward, terminated, _, info = env.step(SUBMIT)
        assert terminated and reward == 0.0 and info["patch"] == ""
        assert info["grade"]["tests_status"]["FAIL_TO_PASS"]["failure"] == F2P


@pytest.mark.docker
def test_the_agent_runs_in_the_tasks_activated_environment(task):
    """Official SWE-bench images activate conda's testbed before the tests; the agent's commands
    (its own actions, and an outside harness's through run_command) get the same activation."""
    import dataclasses

    activated = dataclasses.replace(task, env_activate="export AGENT_RL_ACTIVATED=testbed && cd /tmp")
    env = SWEEnv(tasks=[activated])
    try:
        env.reset(seed=0)
        obs, *_ = env.step("```bash\necho \"env=$AGENT_RL_ACTIVATED\"\npwd\n```")
        assert "env=testbed" in obs and "/tmp" in obs
        result = env.run_command("echo \"env=$AGENT_RL_ACTIVATED\"")
        assert result["output"].strip() == "env=testbed" and result["returncode"] == 0
    finally:
        env.close()

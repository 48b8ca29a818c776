"""`agent-rl demos` for real: the scripted expert plays built-in tasks in Docker through the
normal episode runner; every demonstration resolves under the normal grader, and the loss
mask is 1 exactly on the expert's tokens."""
from __future__ import annotations

import json

import pytest

from agent_rl.demos.collect import base_files, base_files_from_image, collect_demos, plan
from agent_rl.engines.models import DEFAULT_MODEL, load_tokenizer
from agent_rl.rollout.chat_template import encode, end_of_turn_ids
from agent_rl.rollout.trajectory import read_jsonl
from envs.grading import grade
from envs.suites import load_suite

# One-file tasks and two two-file gold patches (multi-file, multi-hunk).
TASK_IDS = ("semvertools-001", "semvertools-010", "lrukit-010", "spanset-011")


def mask_runs(mask: list[int], ids: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i, (m, tok) in enumerate(zip(mask, ids)):
        if m and (i == 0 or not mask[i - 1]):
            runs.append([])
        if m:
            runs[-1].append(tok)
    return runs


@pytest.mark.docker
@pytest.mark.timeout(300)
async def test_demos_resolve_and_mask_only_the_experts_tokens(tmp_path):
    tasks = [t for t in load_suite() if t.instance_id in TASK_IDS]
    assert len(tasks) == len(TASK_IDS)
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    report = await collect_demos(tasks, tokenizer, tmp_path, concurrency=2)
    assert (report.tasks, report.resolved, report.kept, report.written) == (4, 4, 4, 4), report.rows
    trajectories = {t.task_id: t for t in read_jsonl(str(tmp_path / "trajectories.jsonl"))}
    assert sorted(trajectories) == sorted(TASK_IDS)
    assert len((tmp_path / "sft.jsonl").read_text().splitlines()) == 4
    assert [r["status"] for r in json.loads((tmp_path / "report.json").read_text())["rows"]] == ["kept"] * 4
    end = end_of_turn_ids(tokenizer)
    for task in tasks:
        traj = trajectories[task.instance_id]
        replies = plan(task, "fenced")
        assert traj.resolved and traj.reward == 1.0 and traj.finish_reason == "submitted" and traj.trainable
        assert traj.num_turns == len(replies)
        assert mask_runs(traj.loss_mask, traj.response_ids) == [encode(tokenizer, r) + end for r in replies]
        assert set(traj.behaviour_logprobs) == {0.0}
        assert [m["content"] for m in traj.messages if m["role"] == "assistant"] == replies
        # The env's diff is the gold change made by edits, never the patch file: regrade it.
        assert grade(task, traj.patch).resolved


@pytest.mark.docker
def test_base_files_of_a_non_local_repo_are_read_from_the_task_image():
    task = next(t for t in load_suite("semvertools") if t.instance_id == "semvertools-010")
    paths = ["semvertools/version.py", "semvertools/ranges.py", "no/such/file.py"]
    from_git = base_files(task, paths)
    assert sorted(from_git) == sorted(paths[:2])
    assert base_files_from_image(task, paths) == from_git


@pytest.mark.docker
@pytest.mark.timeout(300)
async def test_direct_demos_edit_then_submit_and_still_resolve(tmp_path):
    from envs.tasks import load_tasks

    tasks = [t for t in load_tasks("builtin:floor:train") if t.instance_id in ("datekit-001-floor", "lrukit-010-floor")]
    assert len(tasks) == 2
    report = await collect_demos(tasks, load_tokenizer(DEFAULT_MODEL), tmp_path, concurrency=2, style="direct")
    assert (report.resolved, report.kept) == (2, 2), report.rows
    for traj in read_jsonl(str(tmp_path / "trajectories.jsonl")):
        replies = [m["content"] for m in traj.messages if m["role"] == "assistant"]
        # No view, no test run: only edits, then the submit.
        assert all("```edit " in r for r in replies[:-1]) and replies[-1].endswith("```submit\n```")
        assert traj.num_turns == len(replies) < 4 + 1
    with pytest.raises(ValueError, match="unknown demo style"):
        plan(tasks[0], "fenced", style="quick")

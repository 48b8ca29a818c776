"""Task → image: content-keyed, built once under concurrency, clear errors for broken tasks."""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from tinytask import make_tiny_task

from envs import task_images
from envs.task_images import TaskImageError, image_key, task_image
from envs.tasks import Task, TaskError


def test_prebuilt_image_is_used_as_is():
    task = Task(instance_id="t", repo="/nowhere", base_commit="c", problem_statement="p", image="my/image:1")
    assert task_image(task) == "my/image:1"


def test_image_key_ignores_hidden_tests_but_not_setup():
    task = Task(instance_id="t", repo="/r", base_commit="c", problem_statement="p")
    assert image_key(task) == image_key(Task(**{**task.to_dict(), "test_patch": "x", "patch": "y"}))
    assert image_key(task) != image_key(Task(**{**task.to_dict(), "setup": ["pip install -e ."]}))


def test_broken_repo_is_a_task_error_naming_the_task(tmp_path):
    task = Task(instance_id="broken-1", repo=str(tmp_path / "missing"), base_commit="c", problem_statement="p")
    with pytest.raises(TaskError, match="task 'broken-1': field repo .* is not a git repository"):
        task_image(task)


@pytest.mark.docker
def test_concurrent_requests_agree_across_threads_and_processes(tmp_path, monkeypatch):
    task = make_tiny_task(tmp_path)
    monkeypatch.setattr(task_images, "_memo", {})
    with ThreadPoolExecutor(max_workers=4) as pool:
        tags = list(pool.map(lambda _: task_image(task), range(4)))
    assert len(set(tags)) == 1 and tags[0].startswith("agent-rl/repo:")
    # Another process asking for the same task gets the same content-hashed tag.
    tasks_file = tmp_path / "task.json"
    tasks_file.write_text(json.dumps([task.to_dict()]))
    code = f"from envs.tasks import load_tasks; from envs.task_images import task_image; print(task_image(load_tasks({str(tasks_file)!r})[0]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == tags[0], out.stderr


@pytest.mark.docker
def test_bad_base_commit_is_reported(tmp_path):
    task = make_tiny_task(tmp_path)
    bad = Task(**{**task.to_dict(), "instance_id": "bad-commit", "base_commit": "deadbeef" * 5})
    with pytest.raises(TaskImageError, match="task 'bad-commit': building its image failed"):
        task_image(bad)

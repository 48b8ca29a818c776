"""Task loaders: JSONL/JSON files, builtin specs, git URLs, lookup by id. No Docker."""
from __future__ import annotations

import json
import sys

import pytest
from tinytask import git, make_tiny_task

from envs.tasks import Task, TaskError, TaskStore, load_hf_dataset, load_jsonl, load_tasks, resolve_repo


def row(instance_id: str = "org__repo-1", **overrides: object) -> dict:
    base = {
        "instance_id": instance_id,
        "repo": "/tmp/some-repo",
        "base_commit": "a" * 40,
        "problem_statement": "It breaks.",
        "patch": "diff --git a/x b/x\n",
        "test_patch": "",
        "FAIL_TO_PASS": json.dumps(["tests/test_x.py::test_a"]),  # SWE-bench ships JSON strings
        "PASS_TO_PASS": ["tests/test_x.py::test_b"],
        "created_at": "2024-01-01",  # unknown SWE-bench fields are kept in extra
    }
    base.update(overrides)
    return base


def write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_load_jsonl_swe_bench_rows(tmp_path):
    tasks = load_jsonl(write_jsonl(tmp_path / "t.jsonl", [row("a-1"), "", row("a-2", FAIL_TO_PASS=["t::x"])]))
    assert [t.instance_id for t in tasks] == ["a-1", "a-2"]
    assert tasks[0].FAIL_TO_PASS == ["tests/test_x.py::test_a"] and tasks[1].FAIL_TO_PASS == ["t::x"]
    assert tasks[0].extra == {"created_at": "2024-01-01"}


@pytest.mark.parametrize(
    "bad_row, needle",
    [
        ("{not json", r"t\.jsonl:2: not valid JSON"),
        (row("b-1", FAIL_TO_PASS="[oops"), r"t\.jsonl:2: task 'b-1': field FAIL_TO_PASS is not a JSON list"),
        (row("b-2", PASS_TO_PASS=[1, 2]), "task 'b-2'.*field PASS_TO_PASS must be a list of test ids"),
        (row("b-3", problem_statement=""), "task 'b-3'.*field problem_statement is missing or empty"),
        (row("b-4", test_timeout_s="soon"), "task 'b-4'.*field test_timeout_s must be a number"),
        (row("b-5", setup="pip install ."), "task 'b-5'.*field setup must be a list of strings"),
        ({"repo": "x"}, r"task '<missing instance_id>'.*t\.jsonl:2.*instance_id"),
        ([1, 2], r"t\.jsonl:2.*expected an object"),
        (row("a-1"), "duplicate instance_id 'a-1'"),
    ],
)
def test_malformed_task_file_errors_name_file_line_task_and_field(tmp_path, bad_row, needle):
    path = write_jsonl(tmp_path / "t.jsonl", [row("a-1"), bad_row])
    with pytest.raises(TaskError, match=needle):
        load_jsonl(path)


def test_missing_file_and_unknown_spec(tmp_path):
    with pytest.raises(TaskError, match="cannot read task file .*nope.jsonl"):
        load_tasks(str(tmp_path / "nope.jsonl"))
    with pytest.raises(TaskError, match="unknown task spec 'tasks.csv'"):
        load_tasks("tasks.csv")


def test_load_json_list_and_object(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([row("j-1")]))
    (tmp_path / "b.json").write_text(json.dumps({"tasks": [row("j-2")]}))
    (tmp_path / "c.json").write_text('{"tasks": 3}')
    assert load_tasks(tmp_path / "a.json")[0].instance_id == "j-1"
    assert load_tasks(str(tmp_path / "b.json"))[0].instance_id == "j-2"
    with pytest.raises(TaskError, match="c.json: expected a list of tasks"):
        load_tasks(tmp_path / "c.json")


def test_load_tasks_from_objects_and_store_lookup():
    tasks = load_tasks([row("s-1"), Task.from_dict(row("s-2"))])
    store = TaskStore(tasks)
    assert store["s-2"].instance_id == "s-2" and "s-1" in store and len(store) == 2
    assert store.ids() == ["s-1", "s-2"] and TaskStore.from_spec(store) is store
    with pytest.raises(TaskError, match="no task 's-3' among 2 tasks"):
        store.get("s-3")
    with pytest.raises(TaskError, match="duplicate"):
        TaskStore(tasks + tasks)


def test_builtin_specs():
    from envs.suites import list_suites

    suites = list_suites()
    assert suites, "the builtin suites should be present"
    everything = load_tasks("builtin")
    easy = load_tasks("builtin:easy")
    one_suite = load_tasks(f"builtin:{suites[0]}")
    one_suite_hard = load_tasks(f"builtin:{suites[0]}:hard")
    assert easy and all(t.difficulty == "easy" for t in easy)
    assert {t.suite for t in one_suite} == {suites[0]}
    assert all(t.difficulty == "hard" and t.suite == suites[0] for t in one_suite_hard)
    assert len(everything) >= len(one_suite) + len(easy) - len([t for t in one_suite if t.difficulty == "easy"])
    with pytest.raises(TaskError, match="unknown builtin suite 'nosuch'"):
        load_tasks("builtin:nosuch")
    with pytest.raises(TaskError, match="difficulty must be one of"):
        load_tasks(f"builtin:{suites[0]}:impossible")
    with pytest.raises(TaskError, match="bad builtin spec"):
        load_tasks("builtin:a:b:c")


def test_hf_loader_without_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # make `import datasets` fail even if installed
    with pytest.raises(TaskError, match=r"needs the 'datasets' package: pip install 'agent-rl\[datasets\]'"):
        load_hf_dataset("princeton-nlp/SWE-bench_Lite")
    with pytest.raises(TaskError, match="datasets"):
        load_tasks("hf:princeton-nlp/SWE-bench_Lite:test")


def test_git_url_repos_are_cloned_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_RL_CACHE", str(tmp_path / "cache"))
    task = make_tiny_task(tmp_path)
    url_task = Task.from_dict({**task.to_dict(), "repo": f"file://{task.repo}"})
    first = resolve_repo(url_task)
    assert first.is_relative_to(tmp_path / "cache") and git(first, "cat-file", "-t", task.base_commit).strip() == "commit"
    assert resolve_repo(url_task) == first
    bad = Task.from_dict({**task.to_dict(), "repo": f"file://{tmp_path}/missing", "instance_id": "bad"})
    with pytest.raises(TaskError, match="task 'bad': cannot get commit"):
        resolve_repo(bad)
    with pytest.raises(TaskError, match="is not a git repository"):
        resolve_repo(Task.from_dict({**task.to_dict(), "repo": str(tmp_path / "nowhere")}))

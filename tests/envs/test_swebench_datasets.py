"""SWE-bench-family rows → tasks (image naming, activation, runner), log-runner grading's pure
parts, and the clear errors for a missing image or a full disk. No Docker engine needed."""
from __future__ import annotations

import json
from types import SimpleNamespace

import docker
import pytest

from envs import task_images
from envs.swebench import datasets, log_grading, specs
from envs.swebench.datasets import official_image_name
from envs.task_images import ImageUnavailableError, ensure_images, task_image
from envs.tasks import Task, TaskError, load_tasks

SHA = "e7fd69d051eaa67cb17f172a39b57253e9cb831a"


def swe_row(instance_id: str = "django__django-11099", repo: str = "django/django", **overrides: object) -> dict:
    row = {
        "instance_id": instance_id,
        "repo": repo,
        "base_commit": SHA,
        "problem_statement": "UsernameValidator allows trailing newline",
        "patch": "diff --git a/django/x.py b/django/x.py\n",
        "test_patch": "diff --git a/tests/auth_tests/test_validators.py b/tests/auth_tests/test_validators.py\n"
                      "diff --git a/tests/auth_tests/data.json b/tests/auth_tests/data.json\n",
        "FAIL_TO_PASS": json.dumps(["test_unicode_validator (auth_tests.test_validators.UsernameValidatorsTests)"]),
        "PASS_TO_PASS": json.dumps(["test_help_text (auth_tests.test_validators.MinimumLengthValidatorTest)"]),
        "version": "3.0",
        "environment_setup_commit": SHA,
        "created_at": "2019-03-20",
        "hints_text": "",
    }
    row.update(overrides)
    return row


def write_rows(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(datasets.REGISTRY_ENV, raising=False)
    monkeypatch.delenv(datasets.NAMESPACE_ENV, raising=False)


# --------------------------------------------------------------------------------------
# Image naming
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("instance_id", ["django__django-11099", "Project-MONAI__MONAI-3715", "sympy__sympy-20590"])
def test_image_names_match_the_official_harness(instance_id):
    image_spec = pytest.importorskip("swebench.image_builder.image_spec")
    checks = pytest.importorskip("swebench.task.checks")
    official = image_spec.ImageSpec(instance_id=instance_id, dockerfile="FROM x", namespace="swebench")
    assert official_image_name(instance_id) == official.name == checks.expected_image(instance_id)
    local = image_spec.ImageSpec(instance_id=instance_id, dockerfile="FROM x", namespace=None)
    assert official_image_name(instance_id, namespace=None) == local.name


def test_the_documented_names():
    assert official_image_name("django__django-11099") == "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    gym = datasets.PROFILES["swe-gym"]
    assert gym.derive("Project-MONAI__MONAI-3715", gym.namespace) == (
        "xingyaoww/sweb.eval.x86_64.project-monai_s_monai-3715:latest"
    )


def test_registry_prefix_and_namespace(monkeypatch):
    row = swe_row()
    assert datasets.map_row(row, registry="mirror.corp:5000/")["image"] == (
        "mirror.corp:5000/swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    )
    monkeypatch.setenv(datasets.REGISTRY_ENV, "mirror.corp:5000/team")
    monkeypatch.setenv(datasets.NAMESPACE_ENV, "")
    assert datasets.map_row(row)["image"] == "mirror.corp:5000/team/sweb.eval.x86_64.django__django-11099:latest"
    explicit = datasets.map_row(swe_row(image_name="me/img:1"))  # explicit names get the prefix too
    assert explicit["image"] == "mirror.corp:5000/team/me/img:1"


# --------------------------------------------------------------------------------------
# Rows → tasks
# --------------------------------------------------------------------------------------


def test_swe_bench_rows_load_with_the_official_layout(tmp_path):
    rows = [
        swe_row(),
        swe_row("psf__requests-2317", "psf/requests",
                test_patch="diff --git a/test_requests.py b/test_requests.py\n",
                FAIL_TO_PASS='["test_requests.py::test_x"]', PASS_TO_PASS="[]"),
        swe_row("sympy__sympy-20590", "sympy/sympy",
                test_patch="diff --git a/sympy/core/tests/test_basic.py b/sympy/core/tests/test_basic.py\n",
                FAIL_TO_PASS='["test_immutable"]', PASS_TO_PASS='["test__aresame"]'),
    ]
    django, requests, sympy = load_tasks(write_rows(tmp_path / "verified.jsonl", rows))
    assert django.image == "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    assert django.workdir == "/testbed"
    assert datasets.CONDA_ACTIVATE in django.env_activate
    assert django.FAIL_TO_PASS == ["test_unicode_validator (auth_tests.test_validators.UsernameValidatorsTests)"]
    assert django.extra["dataset"] == "swe-bench" and django.extra["created_at"] == "2019-03-20"
    assert django.test_cmd == "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1"
    assert log_grading.uses_log_runner(django) and log_grading.uses_log_runner(sympy)
    # the runner's targets: the test patch's test files, as the harness picks them
    assert log_grading.test_command(django, specs.for_task(django)).endswith(" auth_tests.test_validators")
    assert log_grading.test_command(sympy, specs.for_task(sympy)) == (
        "bin/test -C --verbose sympy/core/tests/test_basic.py"
    )
    # pytest repositories keep the launcher path, run after the activation
    assert requests.test_cmd == "python3 -m pytest" and not log_grading.uses_log_runner(requests)


def test_each_dataset_names_its_image(tmp_path):
    smith = swe_row("getmoto__moto.694ce1f4.pr_5", "getmoto/moto", image_name="jyangballin/swesmith.x86_64.getmoto:1")
    rebench = swe_row("oemof__tespy-653", "oemof/tespy", docker_image="swerebench/sweb.eval.x86_64.oemof_1776_tespy-653")
    five = swe_row(image="swebench/sweb.eval.x86_64.django_1776_django-11099:v2", log_parser="parse_log_django",
                   eval_type="pass_and_fail")
    got = load_tasks(write_rows(tmp_path / "mixed.jsonl", [smith, rebench, five]))
    assert [t.image for t in got] == [smith["image_name"], rebench["docker_image"], five["image"]]
    assert [t.extra["dataset"] for t in got] == ["swe-smith", "swe-rebench", "swe-bench"]
    assert got[2].extra["log_parser"] == "parse_log_django" and got[2].extra["eval_type"] == "pass_and_fail"
    gym = load_tasks(write_rows(tmp_path / "gym.jsonl", [swe_row("pandas-dev__pandas-1", "pandas-dev/pandas")]))
    assert gym[0].image.startswith("swebench/")  # detected per row: no image field → SWE-bench naming
    gym = load_tasks("swe-gym:" + str(tmp_path / "gym.jsonl"))  # the profile named in the spec
    assert gym[0].image == "xingyaoww/sweb.eval.x86_64.pandas-dev_s_pandas-1:latest"
    assert datasets.profile_for_hf("princeton-nlp/SWE-bench_Verified").name == "swe-bench"
    assert datasets.profile_for_hf("SWE-Gym/SWE-Gym").name == "swe-gym"
    assert datasets.profile_for_hf("nebius/SWE-rebench").name == "swe-rebench"


def test_explicit_pytest_parser_means_log_grading_with_the_runner_command(tmp_path):
    row = swe_row("psf__requests-2317", "psf/requests", log_parser="pytest_options",
                  test_patch="diff --git a/test_requests.py b/test_requests.py\n",
                  FAIL_TO_PASS='["test_requests.py::test_x"]', PASS_TO_PASS="[]")
    (task,) = load_tasks(write_rows(tmp_path / "t.jsonl", [row]))
    assert log_grading.uses_log_runner(task)
    assert task.test_cmd.startswith("pytest --no-header -rA")
    assert log_grading.test_command(task, specs.for_task(task)).endswith(" test_requests.py")


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"FAIL_TO_PASS": "[not json"}, r"task 'django__django-11099' \(from .*rows\.jsonl:1\): field FAIL_TO_PASS is not a JSON list"),
        ({"FAIL_TO_PASS": "[]"}, r"rows\.jsonl:1\): field FAIL_TO_PASS is empty"),
        ({"PASS_TO_PASS": json.dumps([1, 2])}, r"rows\.jsonl:1\): field PASS_TO_PASS must be a list of test ids"),
        ({"base_commit": "main"}, r"field base_commit must be a commit hash"),
        ({"problem_statement": ""}, r"field problem_statement is missing or empty"),
        ({"log_parser": "parse_log_cobol"}, r"field log_parser names no known parser: unknown log_parser 'parse_log_cobol'"),
        ({"image_name": 7}, r"field image_name must be an image name"),
    ],
)
def test_malformed_rows_name_the_row_and_the_field(tmp_path, bad, needle):
    with pytest.raises(TaskError, match=needle):
        load_tasks(write_rows(tmp_path / "rows.jsonl", [swe_row(**bad)]))


def test_datasets_that_must_name_their_image_say_so(tmp_path):
    with pytest.raises(TaskError, match=r"field image_name is missing: swe-smith rows name their image"):
        load_tasks("swe-smith:" + write_rows(tmp_path / "s.jsonl", [swe_row()]))
    native_r2e = {"repo_name": "aiohttp", "docker_image": "namanjain12/aiohttp_final:abc", "problem_statement": "x",
                  "instance_id": "aiohttp-1", "repo": "aio-libs/aiohttp"}
    # Native R2E-Gym rows load (tests/envs/test_r2e.py); an incomplete one names what it lacks.
    with pytest.raises(TaskError, match=r"R2E-Gym row 'aiohttp-1' .*field parsed_commit_content is missing"):
        load_tasks("r2e-gym:" + write_rows(tmp_path / "r.jsonl", [native_r2e]))
    with pytest.raises(TaskError, match=r"unknown task spec"):
        load_tasks("swe-gym:" + str(tmp_path / "rows.csv"))


def test_agent_rl_rows_are_left_alone(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    native = {"instance_id": "t-1", "repo": str(repo), "base_commit": "abc", "problem_statement": "p"}
    built = {**native, "instance_id": "t-2", "repo": "org/repo", "setup": ["pip install -e ."]}
    first, second = load_tasks(write_rows(tmp_path / "n.jsonl", [native, built]))
    assert first.image == second.image == "" and first.env_activate == second.env_activate == ""
    assert "dataset" not in first.extra and not log_grading.uses_log_runner(first)


# --------------------------------------------------------------------------------------
# Log-runner grading, pure parts
# --------------------------------------------------------------------------------------

UNITTEST_LOG = """test_add (tests.test_calc.TestCalc.test_add) ... FAIL
test_sub (tests.test_calc.TestCalc.test_sub) ... ok

======================================================================
FAIL: test_add (tests.test_calc.TestCalc.test_add)
----------------------------------------------------------------------
AssertionError: -1 != 5

Ran 2 tests in 0.001s

FAILED (failures=1)
"""


def _unittest_task(**extra: object) -> Task:
    return Task(instance_id="x__y-1", repo="x/y", base_commit=SHA, problem_statement="p",
                FAIL_TO_PASS=["test_add (tests.test_calc.TestCalc.test_add)"],
                PASS_TO_PASS=["test_sub (tests.test_calc.TestCalc.test_sub)"],
                test_patch="diff --git a/tests/test_calc.py b/tests/test_calc.py\n",
                extra={"log_parser": "unittest", **extra})


def test_unittest_log_verdicts():
    task = _unittest_task()
    spec = specs.for_task(task)
    assert log_grading.test_command(task, spec) == "python -m unittest -v tests.test_calc"
    fields, why = log_grading.verdict(task, spec, UNITTEST_LOG, 1)
    assert not why and fields["resolved"] is False
    assert fields["tests_status"]["FAIL_TO_PASS"]["failure"] == task.FAIL_TO_PASS
    fixed = UNITTEST_LOG.replace("test_add) ... FAIL", "test_add) ... ok").split("=====")[0] + "\nOK\n"
    fields, why = log_grading.verdict(task, spec, fixed, 0)
    assert not why and fields["resolved"] is True
    # a runner that failed while the log claims all passed does not count (forged lines)
    fields, why = log_grading.verdict(task, spec, fixed, 1)
    assert "exited 1 yet its log shows no failing test" in why and fields["resolved"] is False
    fields, why = log_grading.verdict(task, spec, "Traceback: ImportError\n", 1)
    assert "found no test results" in why


def test_forged_markers_and_the_log_runner_scan():
    assert log_grading.forged_markers("ok\n>>>>> End Test Output\n")
    assert not log_grading.forged_markers(UNITTEST_LOG)
    patch = (
        "diff --git a/pkg/m.py b/pkg/m.py\n--- a/pkg/m.py\n+++ b/pkg/m.py\n@@ -1 +1,3 @@\n-x = 1\n"
        "+import sys\n+sys.__stdout__.write('test_add (tests.test_calc.TestCalc.test_add) ... ok\\n')\n"
    )
    findings = log_grading.scan_for_log_runner(patch)
    assert any("test-result text" in f for f in findings) and any("real output streams" in f for f in findings)
    assert not log_grading.scan_for_log_runner("diff --git a/pkg/m.py b/pkg/m.py\n+++ b/pkg/m.py\n+x = 2\n")


def test_the_shell_command_activates_then_runs_the_runner_alone():
    task = _unittest_task()
    task.env_activate = datasets.GUARDED_CONDA_ACTIVATE
    command = log_grading.shell_command(task, "python -m unittest -v tests.test_calc", "/tmp/g/out.txt")
    assert command == (
        f"cd /testbed && ( {datasets.GUARDED_CONDA_ACTIVATE} && cd /testbed && python -m unittest -v tests.test_calc )"
        " > /tmp/g/out.txt 2>&1"
    )


def test_the_pytest_command_gets_the_activation_only_when_asked():
    from envs.grading import _test_command

    plain = Task(instance_id="t", repo="/r", base_commit="c", problem_statement="p")
    before = _test_command(plain, "/s/l.py", "/s/c.json", "/s/j.xml", ["tests/test_a.py"])
    assert before.startswith("env ")
    plain.env_activate = datasets.CONDA_ACTIVATE
    after = _test_command(plain, "/s/l.py", "/s/c.json", "/s/j.xml", ["tests/test_a.py"])
    assert after == f"{datasets.CONDA_ACTIVATE} && cd /testbed && {before}"


# --------------------------------------------------------------------------------------
# Images that are not there
# --------------------------------------------------------------------------------------


class FakeImages:
    def __init__(self, present=(), pullable=()):
        self.present, self.pullable, self.pulled = set(present), set(pullable), []

    def get(self, name):
        if name not in self.present:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        # Labelled as one of ours, so task_image needs no adaptation layer (a fake cannot run
        # the container that makes one; tests/envs/test_prebuilt_images.py does, for real).
        return SimpleNamespace(id=name, labels={"agent-rl.managed": "1", "agent-rl.kind": "repo"})

    def pull(self, name):
        if name not in self.pullable:
            raise docker.errors.APIError(f"pull access denied for {name}")
        self.pulled.append(name)
        self.present.add(name)


def fake_client(root, **kwargs):
    return SimpleNamespace(images=FakeImages(**kwargs), info=lambda: {"DockerRootDir": str(root)})


def test_a_missing_image_is_named_with_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setattr(task_images, "_present", set())
    monkeypatch.setenv(task_images.MIN_FREE_DISK_ENV, "0")  # the pull itself must be tried, whatever the host's disk
    (task,) = load_tasks(write_rows(tmp_path / "v.jsonl", [swe_row()]))
    client = fake_client(tmp_path)
    with pytest.raises(ImageUnavailableError) as err:
        task_image(task, client=client)
    message = str(err.value)
    assert "swebench/sweb.eval.x86_64.django_1776_django-11099:latest (task 'django__django-11099')" in message
    assert "not pullable" in message and "pull access denied" in message
    assert "docker load" in message and "prepare_images" in message and "AGENT_RL_IMAGE_REGISTRY" in message
    with pytest.raises(ImageUnavailableError, match="pulling is off"):
        ensure_images([task.image], client=client, pull=False)
    client.images.present.add(task.image)
    assert task_image(task, client=client) == task.image  # present: used as is, checked once


def test_pulls_are_refused_when_the_disk_is_too_full(tmp_path, monkeypatch):
    client = fake_client(tmp_path, pullable={"a:1", "b:1"})
    with pytest.raises(ImageUnavailableError, match=r"refusing to pull 2 image\(s\): .* GB free at .*below the 1e\+09 GB") as err:
        ensure_images(["a:1", "b:1"], client=client, min_free_gb=1e9, tasks={"a:1": "task-a"})
    assert "Missing: a:1 (task 'task-a'), b:1." in str(err.value) and "docker load" in str(err.value)
    monkeypatch.setenv(task_images.MIN_FREE_DISK_ENV, "0")
    assert ensure_images(["a:1", "b:1"], client=client) == ["a:1", "b:1"]
    assert ensure_images(["a:1"], client=client) == []  # present now: nothing to do


def test_a_run_checks_every_dataset_image_up_front_and_names_all_the_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(task_images, "_present", set())
    monkeypatch.setenv(task_images.MIN_FREE_DISK_ENV, "0")
    rows = [swe_row(), swe_row("django__django-11100"), swe_row("sympy__sympy-20590", repo="sympy/sympy")]
    tasks = load_tasks(write_rows(tmp_path / "v.jsonl", rows))
    client = fake_client(tmp_path, present={tasks[0].image})
    with pytest.raises(ImageUnavailableError) as err:
        task_images.require_prebuilt_images(tasks, client=client)
    message = str(err.value)
    assert "2 image(s) not on the Docker engine and not pullable" in message
    assert "(task 'django__django-11100')" in message and "(task 'sympy__sympy-20590')" in message
    assert "django__django-11099" not in message  # present: not reported

    client.images.pullable |= {tasks[1].image, tasks[2].image}
    assert sorted(task_images.require_prebuilt_images(tasks, client=client)) == sorted([tasks[1].image, tasks[2].image])
    assert task_images.require_prebuilt_images(tasks, client=client) == []  # checked once per process
    builtin = [t for t in load_tasks("builtin:easy")[:2]]
    assert task_images.require_prebuilt_images(builtin, client=client) == []  # built from a repo: not checked here

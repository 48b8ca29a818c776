"""The slim evaluator image, built and run for real: no torch inside, grading through the
host's Docker socket (sibling containers), and `eval --engine openai` against `agent-rl serve`
running on the host."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from envs.tasks import load_tasks

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
IMAGE = "agent-rl-eval:latest"
SOCKET = ["-v", "/var/run/docker.sock:/var/run/docker.sock"]


@pytest.fixture(scope="module")
def image() -> str:
    built = subprocess.run(["bash", str(REPO / "scripts" / "build-image.sh"), "eval"], capture_output=True, text=True,
                           timeout=1800, env=dict(os.environ, AGENT_RL_VENV=str(REPO / ".venv")))
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return IMAGE


def docker_run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "run", "--rm", *args], capture_output=True, text=True, timeout=timeout)


def test_the_image_is_slim_and_has_no_torch(image):
    size = int(subprocess.run(["docker", "image", "inspect", image, "--format", "{{.Size}}"],
                              capture_output=True, text=True, check=True).stdout)
    assert size < 1.5e9, f"{image} is {size / 1e9:.1f} GB"
    probe = docker_run("--entrypoint", "python3", image, "-c",
                       "import importlib.util as u; print([m for m in ('torch', 'peft', 'matplotlib') if u.find_spec(m)])")
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stderr
    # An in-process engine is refused with what to do instead.
    refused = docker_run(image, "eval", "--model", "smollm2-135m", "--tasks", "builtin:easy", "--out", "/tmp/x")
    assert refused.returncode == 2 and "needs torch" in refused.stderr and "--engine openai" in refused.stderr


def test_grade_gold_and_empty_predictions_through_the_host_socket(image, tmp_path):
    gold, empty = load_tasks("builtin:easy")[:2]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(
        json.dumps({"instance_id": gold.instance_id, "model_patch": gold.patch, "model_name_or_path": "gold"}) + "\n"
        + json.dumps({"instance_id": empty.instance_id, "model_patch": "", "model_name_or_path": "gold"}) + "\n")
    done = docker_run(*SOCKET, "-v", f"{tmp_path}:/work", image, "grade", "/work/predictions.jsonl",
                      "--tasks", "builtin:easy", "--out", "/work/out")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["resolved_ids"] == [gold.instance_id]
    assert report["empty_patch_ids"] == [empty.instance_id]


def test_eval_a_model_served_on_the_host(image, tmp_path):
    from serve_process import ServerProcess

    server = ServerProcess(tmp_path / "serve.log")
    try:
        spec = "builtin:datekit:easy"  # five tasks, materialised inside the container
        root = server.url.rsplit("/v1", 1)[0]
        done = docker_run(*SOCKET, "--network", "host", "-v", f"{tmp_path}:/work", image, "eval", "--engine", "openai",
                          "--base-url", root, "--model", "smollm2-135m", "--tasks", spec, "--samples", "1",
                          "--max-turns", "1", "--max-tokens-per-turn", "16", "--out", "/work/eval", "--no-progress")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        rows = [json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
        assert len(rows) == len(load_tasks(spec)) and all(not row.get("error") for row in rows), rows
        assert json.loads((tmp_path / "eval" / "report.json").read_text())["totals"]["samples"] == len(rows)
    finally:
        server.stop()

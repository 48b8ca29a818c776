"""The sandbox-related CLI commands, run in-process against the real engine."""
from __future__ import annotations

import pytest

from agent_rl.cli import main

pytestmark = pytest.mark.docker


def test_doctor_passes_on_a_working_machine(base_image, capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("docker engine", "sandbox hardening", "free disk", "open files", "base image", "gpu"):
        assert name in out


def test_images_build_is_a_noop_and_list_shows_it(base_image, capsys):
    assert main(["images", "build"]) == 0
    assert capsys.readouterr().out.strip() == base_image
    assert main(["images", "list"]) == 0
    assert base_image in capsys.readouterr().out


def test_images_build_reports_a_bad_repo(base_image, tmp_path, capsys):
    assert main(["images", "build", "--repo", str(tmp_path / "missing")]) == 1
    assert "git clone" in capsys.readouterr().err


def test_sandbox_gc_and_list(make_sandbox, capsys):
    sandbox = make_sandbox()
    assert main(["sandbox", "gc"]) == 0
    assert "removed" in capsys.readouterr().out
    assert sandbox.exec("echo alive").output == "alive\n"  # a live owner's sandbox survives gc
    assert main(["sandbox", "list"]) == 0
    assert sandbox.container_id[:12] in capsys.readouterr().out

"""LocalSandbox: real subprocesses, same semantics as the containers (no isolation)."""
from __future__ import annotations

import logging
import os
import subprocess
import time

import pytest

from sandboxes.base import Sandbox, SandboxDied
from sandboxes import local as local_module
from sandboxes.local import LocalSandbox
from strictconfig import ConfigError


@pytest.fixture
def local():
    with LocalSandbox({"output_cap": 2000}) as sandbox:
        yield sandbox


def _alive(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def test_warns_that_it_does_not_isolate(caplog):
    with caplog.at_level(logging.WARNING, logger="sandboxes.local"):
        with LocalSandbox() as sandbox:
            assert isinstance(sandbox, Sandbox)
    assert "without isolation" in caplog.text
    assert "does NOT isolate" in (local_module.__doc__ or "")


def test_config_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown key"):
        LocalSandbox({"network": "none"})


def test_cwd_and_env_persist(local):
    assert local.exec("mkdir sub && cd sub && export GREETING=hi").ok
    assert local.exec("pwd; echo $GREETING").output == f"{local.workdir}/sub\nhi\n"
    assert local.exec("echo $ONCE", env={"ONCE": "x"}, cwd="/").output == "x\n"
    assert local.exec("echo ${ONCE-unset}; pwd").output == f"unset\n{local.workdir}/sub\n"


def test_timeout_kills_the_group_and_background_jobs_do_not_hang(local):
    result = local.exec("sleep 912345 & sleep 912346", timeout=0.5)
    assert result.timed_out and result.exit_code == 124
    time.sleep(0.2)
    assert not _alive("sleep 91234[56]")
    started = time.monotonic()
    assert local.exec("sleep 923456 & echo bg").output == "bg\n"
    assert time.monotonic() - started < 5
    assert _alive("sleep 923456")
    local.close()  # closing kills what commands left running
    time.sleep(0.2)
    assert not _alive("sleep 923456")


def test_output_capping_and_binary(local):
    result = local.exec("echo START; seq 1 200000; echo END")
    assert result.truncated and result.output.startswith("START\n") and result.output.endswith("END\n")
    assert "output truncated" in result.output
    binary = local.exec("head -c 100000 /dev/urandom")
    binary.output.encode("utf-8")
    nul = local.exec("echo a\0b")
    assert nul.exit_code == 2 and "NUL" in nul.output


def test_files_and_cleanup(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "m.py").write_text("print(1)\n")
    sandbox = LocalSandbox()
    workdir = sandbox.workdir
    sandbox.write_file("d/x.bin", b"\x00\x01")
    assert sandbox.read_bytes("d/x.bin") == b"\x00\x01"
    sandbox.upload(str(source), "copied")
    assert sandbox.exec("python3 copied/m.py").output == "1\n"
    with pytest.raises(FileNotFoundError):
        sandbox.read_file("missing.txt")
    sandbox.close()
    assert not os.path.exists(workdir)


async def test_async_and_dead_server(local):
    assert (await local.aexec("echo hi")).output == "hi\n"
    local._server.kill()
    local._server.wait()
    with pytest.raises(SandboxDied):
        await local.aexec("echo hi")

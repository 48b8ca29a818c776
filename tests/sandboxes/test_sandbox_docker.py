"""DockerSandbox against the real Docker Engine: hardening, limits, timeouts, output, files."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sandboxes.base import Sandbox, SandboxDied, SandboxError
from sandboxes.docker import DockerSandbox, DockerSandboxConfig, _hardening_option
from sandboxes.fastexec import FileTooLarge
from strictconfig import ConfigError

docker_test = pytest.mark.docker


@pytest.fixture(scope="module")
def shared(docker_client, base_image):
    """One sandbox for the tests that do not damage it."""
    with DockerSandbox(base_image, {"output_cap": 4096}, client=docker_client) as sandbox:
        yield sandbox


# --------------------------------------------------------------------------- config (no Docker)


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="pids_limt.*did you mean 'pids_limit'"):
        DockerSandboxConfig.from_config({"pids_limt": 10})
    with pytest.raises(ConfigError, match="mem_limit"):
        DockerSandboxConfig.from_config({"mem_limit": "lots"})
    with pytest.raises(ConfigError, match="pids_limit"):
        DockerSandboxConfig.from_config({"pids_limit": 0})
    config = DockerSandboxConfig.from_config({"cap_add": ["CHOWN"], "env": {"A": 1}})
    assert config.cap_add == ("CHOWN",) and config.env == {"A": "1"}
    defaults = DockerSandboxConfig()
    assert defaults.relaxations() == []
    relaxed = DockerSandboxConfig.from_config({"network": "bridge", "user": "root", "no_new_privileges": False})
    assert len(relaxed.relaxations()) == 3
    assert (defaults.network, defaults.user, defaults.cap_drop, defaults.no_new_privileges, defaults.init) == (
        "none", "1000:1000", ("ALL",), True, True)


def test_engine_refusals_name_the_hardening_option():
    assert _hardening_option("Your kernel does not support pids limit capabilities") == "pids_limit"
    assert _hardening_option("Your kernel does not support swap limit capabilities") == "mem_limit"
    assert _hardening_option("NanoCPUs can not be set, as your kernel does not support CPU CFS") == "cpus"
    assert _hardening_option("something unrelated happened") is None
    assert _hardening_option("OCI runtime create failed: container init caused: exec: python3: not found") is None


# --------------------------------------------------------------------------- hardening


@docker_test
def test_not_root_no_caps_no_new_privs(shared):
    assert isinstance(shared, Sandbox)
    assert shared.exec("id -u").output.strip() == "1000"
    status = shared.exec("grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status").output
    fields = dict(line.split(":\t") for line in status.strip().splitlines())
    assert fields["CapEff"].strip() == fields["CapPrm"].strip() == fields["CapBnd"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"


@docker_test
def test_no_network(shared):
    result = shared.exec(
        "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 80), timeout=3)\"", timeout=20)
    assert result.exit_code != 0
    assert "unreachable" in result.output.lower() or "error" in result.output.lower()
    assert shared.exec("ls /sys/class/net").output.split() == ["lo"]


@docker_test
def test_limits_are_applied(docker_client, shared):
    host = docker_client.api.inspect_container(shared.container_id)["HostConfig"]
    assert host["NetworkMode"] == "none" and host["CapDrop"] == ["ALL"] and host["Init"] is True
    assert host["PidsLimit"] == 256 and host["Memory"] == 2 * 1024**3 and host["NanoCpus"] == 10**9
    assert "no-new-privileges" in host["SecurityOpt"]


# --------------------------------------------------------------------------- exec semantics


@docker_test
def test_cwd_and_env_persist_like_a_shell(shared):
    assert shared.exec("mkdir -p /tmp/persist && cd /tmp/persist && export FOO='a b'").ok
    assert shared.exec("pwd; echo $FOO").output == "/tmp/persist\na b\n"
    result = shared.exec("echo $ONCE; pwd", cwd="/", env={"ONCE": "1"})
    assert result.output == "1\n/\n"
    assert shared.exec("echo ${ONCE-unset}; pwd").output == "unset\n/tmp/persist\n"
    assert shared.exec("cd /; unset FOO; exit 3").exit_code == 3  # state saved on `exit` too
    assert shared.exec("pwd; echo ${FOO-gone}").output == "/\ngone\n"
    assert shared.exec("cd /testbed").ok


@docker_test
def test_timeouts_kill_the_process_group(shared):
    started = time.monotonic()
    result = shared.exec("sleep infinity", timeout=1)
    assert result.timed_out and not result.ok and time.monotonic() - started < 10
    result = shared.exec("yes", timeout=1)
    assert result.timed_out and result.truncated and result.output.startswith("y\ny\n")
    result = shared.exec("sleep 777 & sleep 778", timeout=1)
    assert result.timed_out
    assert shared.exec("pgrep -f 'sleep 77[78]'").output == ""  # the background job died too


@docker_test
def test_background_daemon_does_not_hang_exec(shared):
    started = time.monotonic()
    result = shared.exec("sleep 1000 & echo started", timeout=30)
    assert result.output == "started\n" and not result.timed_out
    result = shared.exec("nohup sleep 1001 >/dev/null 2>&1 & (sleep 1002 &) ; echo again", timeout=30)
    assert result.output == "again\n"
    assert time.monotonic() - started < 10
    assert shared.exec("pgrep -c -f 'sleep 100[012]'").output.strip() == "3"  # jobs keep running
    shared.exec("pkill -f 'sleep 100[012]'")


@docker_test
def test_huge_output_is_capped_keeping_head_and_tail(shared):
    cmd = "python3 -c \"import sys; sys.stdout.write('HEAD' + 'x' * 50_000_000 + 'TAIL')\""
    result = shared.exec(cmd, timeout=60)
    assert result.ok and result.truncated
    assert result.output.startswith("HEADxxx") and result.output.endswith("xxxTAIL")
    assert "output truncated" in result.output and len(result.output) < 4096 + 200


@docker_test
def test_binary_output_is_valid_text(shared):
    result = shared.exec("head -c 1000000 /dev/urandom", timeout=30)
    assert result.ok and result.truncated
    result.output.encode("utf-8")  # no surrogates: valid UTF-8 text
    assert "\ufffd" in result.output


@docker_test
def test_files_round_trip(shared, tmp_path):
    shared.write_file("notes/a.txt", "héllo\n")
    assert shared.read_file("/testbed/notes/a.txt") == "héllo\n"
    blob = bytes(range(256)) * 100
    shared.write_file("/tmp/blob.bin", blob)
    assert shared.read_bytes("/tmp/blob.bin") == blob
    with pytest.raises(FileNotFoundError):
        shared.read_file("does/not/exist")
    with pytest.raises(FileTooLarge, match="read limit"):
        shared.read_bytes("/tmp/blob.bin", max_bytes=1000)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("X = 1\n")
    (tmp_path / "single.bin").write_bytes(blob)
    shared.upload(str(tmp_path / "pkg"), "/testbed/uploaded/pkg")
    shared.upload(str(tmp_path / "single.bin"), "uploaded/single.bin")
    assert shared.read_file("uploaded/pkg/mod.py") == "X = 1\n"
    assert shared.read_bytes("uploaded/single.bin") == blob
    assert shared.exec("stat -c %u uploaded/pkg/mod.py notes/a.txt").output.split() == ["1000", "1000"]
    assert shared.exec("echo more >> uploaded/pkg/mod.py").ok  # the agent can edit uploads


@docker_test
async def test_async_twins(shared):
    await shared.awrite_file("async.txt", "a")
    assert await shared.aread_file("async.txt") == "a"
    assert (await shared.aexec("cat async.txt")).output == "a"


# --------------------------------------------------------------------------- limits and death


@docker_test
def test_fork_bomb_hits_pids_limit(make_sandbox):
    sandbox = make_sandbox({"pids_limit": 64, "cpus": 0.5})
    # In the foreground: the timeout kills the whole group and the sandbox recovers.
    bomb = "python3 -c 'import os\nwhile True:\n    try: os.fork()\n    except OSError: pass'"
    result = sandbox.exec(bomb, timeout=3)
    assert result.timed_out
    assert sandbox.exec("echo alive", timeout=30).output == "alive\n"
    # The classic bash bomb backgrounds itself, so the command "succeeds" and the bomb keeps
    # every pid busy: the sandbox must still answer (maybe "cannot fork") or die clearly.
    sandbox.exec(":(){ :|:& };:", timeout=3)
    started = time.monotonic()
    try:
        sandbox.exec("echo alive", timeout=5)
    except SandboxDied:
        pass
    assert time.monotonic() - started < 5 + 20


@docker_test
def test_memory_bomb_is_killed(make_sandbox):
    sandbox = make_sandbox({"mem_limit": "64m"})
    try:
        result = sandbox.exec("python3 -c \"b = b'x' * (512 * 1024 * 1024)\"", timeout=60)
    except SandboxDied as exc:
        assert "OOM" in str(exc) or "died" in str(exc)
        return
    assert result.exit_code in (137, 1) and not result.timed_out  # OOM-killed (or MemoryError)
    assert sandbox.exec("echo alive").output == "alive\n"


@docker_test
def test_container_killed_mid_command_raises_promptly(make_sandbox, docker_client):
    sandbox = make_sandbox()
    threading.Timer(1.0, lambda: docker_client.api.kill(sandbox.container_id)).start()
    started = time.monotonic()
    with pytest.raises(SandboxDied, match="died"):
        sandbox.exec("sleep 60", timeout=120)
    assert time.monotonic() - started < 15
    with pytest.raises(SandboxDied):
        sandbox.exec("true")


@docker_test
def test_removed_container_raises(make_sandbox, docker_client):
    sandbox = make_sandbox()
    docker_client.api.remove_container(sandbox.container_id, force=True)
    with pytest.raises(SandboxDied):
        sandbox.exec("true", timeout=5)
    sandbox.close()  # closing a dead sandbox is fine


@docker_test
def test_missing_image_is_a_clear_error(docker_client):
    with pytest.raises(SandboxError, match="not found"):
        DockerSandbox("agent-rl/no-such-image:nope", client=docker_client)


@docker_test
async def test_32_sandboxes_concurrently(make_sandbox):
    from sandboxes.executor import run_blocking

    sandboxes = await asyncio.gather(*(run_blocking(make_sandbox, {"mem_limit": "256m"}) for _ in range(32)))

    async def episode(index, sandbox):
        await sandbox.awrite_file("id.txt", str(index))
        outputs = [await sandbox.aexec(f"cat id.txt; echo {step}") for step in range(3)]
        slow = await sandbox.aexec("sleep 0.5; cat id.txt")
        return [r.output for r in outputs] + [slow.output]

    results = await asyncio.gather(*(episode(i, s) for i, s in enumerate(sandboxes)))
    for index, outputs in enumerate(results):
        assert outputs == [f"{index}{step}\n" for step in range(3)] + [str(index)]


# --------------------------------------------------------------------------- exec_run fallback


@docker_test
def test_exec_run_fallback_has_the_same_semantics(make_sandbox, tmp_path):
    sandbox = make_sandbox({"fast_exec": False, "output_cap": 1000})
    assert sandbox.exec("cd /tmp && export BAR=1").ok
    assert sandbox.exec("pwd; echo $BAR; id -u").output == "/tmp\n1\n1000\n"
    result = sandbox.exec("sleep 100 & sleep 101", timeout=1)
    assert result.timed_out
    assert sandbox.exec("seq 1 100000").truncated
    sandbox.write_file("f/x.bin", b"\x00\xff")
    assert sandbox.read_bytes("/testbed/f/x.bin") == b"\x00\xff"
    with pytest.raises(FileNotFoundError):
        sandbox.read_file("nope")
    with pytest.raises(FileTooLarge):
        sandbox.read_bytes("/testbed/f/x.bin", max_bytes=1)
    (tmp_path / "u.txt").write_text("up")
    sandbox.upload(str(tmp_path / "u.txt"), "/testbed/u.txt")
    assert sandbox.exec("cat /testbed/u.txt; stat -c %u /testbed/u.txt /testbed/f/x.bin").output == "up1000\n1000\n"


# --------------------------------------------------------------------------- leaked containers


@docker_test
def test_sigkilled_owner_is_reaped(docker_client, base_image):
    from sandboxes.docker import OWNER_PID_LABEL
    from sandboxes.reaper import reap

    script = textwrap.dedent(f"""
        import sys, time
        from sandboxes.docker import DockerSandbox
        boxes = [DockerSandbox({base_image!r}) for _ in range(2)]
        print(" ".join(b.container_id for b in boxes), flush=True)
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        ids = child.stdout.readline().split()
        assert len(ids) == 2
    finally:
        child.kill()
        child.wait()
    reap(docker_client)
    owned = docker_client.containers.list(all=True, filters={"label": f"{OWNER_PID_LABEL}={child.pid}"})
    assert owned == []


@docker_test
def test_image_without_the_current_server_gets_it_copied_in(make_sandbox, docker_client):
    """Foreign images (here: the bare debootstrap rootfs, no server, no `agent` user) work too."""
    import hashlib

    from sandboxes.images import KIND_LABEL

    rootfs = docker_client.images.list(filters={"label": f"{KIND_LABEL}=rootfs"})[0]
    sandbox = make_sandbox({"workdir": "/tmp"}, image=rootfs.id)
    source = open(os.path.join(os.path.dirname(__file__), "../../sandboxes/fastexec_server.py"), "rb").read()
    assert sandbox.exec("id -u; sha256sum /opt/agent-rl/fastexec_server.py").output.split()[:2] == [
        "1000", hashlib.sha256(source).hexdigest()]


@docker_test
def test_engine_refusing_a_limit_raises_hardening_unsupported(docker_client, base_image):
    from sandboxes.base import HardeningUnsupported

    from sandboxes.docker import OWNER_PID_LABEL

    def ours() -> set[str]:
        filters = {"label": f"{OWNER_PID_LABEL}={os.getpid()}"}
        return {c.id for c in docker_client.containers.list(all=True, filters=filters)}

    before = ours()
    with pytest.raises(HardeningUnsupported, match="cpus"):
        DockerSandbox(base_image, {"cpus": 4096}, client=docker_client)  # more CPUs than the host has
    assert ours() - before == set()  # nothing left behind

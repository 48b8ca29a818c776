"""ssh:// Docker hosts for real: a private sshd, the real `ssh` client, `docker system dial-stdio`.

The module fixture starts its own sshd (127.0.0.1 only, a free port, its own host key, config
and authorized key in a temp dir) and writes a wrapper named `ssh` that runs the real client
with a config of its own (that key, no host-key prompt, no known_hosts): the tests put it first
on PATH, so the user's ~/.ssh is never read or written. Behind that sshd is this machine's own
engine, so each test checks both ends: what was made over ssh is inspected over the socket.
Nothing here is mocked; without sshd the tests skip locally and fail under CI=true.
"""
from __future__ import annotations

import getpass
import io
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from envs.episode_sandboxes import EpisodeSandboxes
from envs.tasks import Task
from sandboxes.base import SandboxError
from sandboxes.docker import OWNER_PID_LABEL, DockerSandbox
from sandboxes.hosts import DockerHosts

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
TASK = Task(instance_id="ssh-host", repo="-", base_commit="-", problem_statement="-")


@dataclass
class SSHHost:
    url: str  # ssh://USER@127.0.0.1:PORT, the endpoint under test
    log: Path  # sshd's own log (-e)
    good_path: str  # PATH whose `ssh` uses the authorized key
    wrong_key_path: str  # PATH whose `ssh` offers a key sshd does not know

    def accepted_logins(self) -> int:
        return self.log.read_text(errors="replace").count("Accepted publickey for")


def _missing(why: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true: {why}; the ssh:// Docker host tests must run (scripts/setup.sh installs openssh-server)")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ssh_wrapper(directory: Path, real_ssh: str, key: Path) -> str:
    """A directory holding `ssh`: the real client with this config only (-F: no ~/.ssh/config)."""
    directory.mkdir()
    config = directory / "ssh_config"
    config.write_text(textwrap.dedent(f"""\
        Host *
          IdentityFile {key}
          IdentitiesOnly yes
          StrictHostKeyChecking no
          UserKnownHostsFile /dev/null
          GlobalKnownHostsFile /dev/null
          LogLevel ERROR
        """))
    wrapper = directory / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {real_ssh} -F {config} "$@"\n')
    wrapper.chmod(0o755)
    return f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="module")
def ssh_host(docker_engine, tmp_path_factory):
    sshd = next((p for p in ("/usr/sbin/sshd", shutil.which("sshd")) if p and os.access(p, os.X_OK)), None)
    real_ssh, keygen, docker_cli = shutil.which("ssh"), shutil.which("ssh-keygen"), shutil.which("docker")
    if not (sshd and real_ssh and keygen):
        _missing("an ssh:// Docker host needs sshd, ssh and ssh-keygen (apt-get install openssh-server)")
    if not docker_cli:
        _missing("the ssh:// Docker host runs `docker system dial-stdio` remotely: the docker CLI is not on PATH")
    try:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    except OSError as exc:
        _missing(f"sshd needs /run/sshd ({exc})")

    home = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key", "wrong_key"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(home / name)], check=True)
    authorized = home / "authorized_keys"
    authorized.write_text((home / "client_key.pub").read_text())
    authorized.chmod(0o600)
    # The remote command finds the same docker CLI and engine as this process.
    remote_env = f"PATH={os.path.dirname(docker_cli)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    if os.environ.get("DOCKER_HOST"):
        remote_env += f" DOCKER_HOST={os.environ['DOCKER_HOST']}"
    log = home / "sshd.log"
    proc = None
    for _attempt in range(3):  # the free port may be taken between the probe and sshd's bind
        port = _free_port()
        config = home / "sshd_config"
        config.write_text(textwrap.dedent(f"""\
            ListenAddress 127.0.0.1
            Port {port}
            HostKey {home / "host_key"}
            PidFile {home / "sshd.pid"}
            AuthorizedKeysFile {authorized}
            PubkeyAuthentication yes
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            UsePAM no
            StrictModes no
            SetEnv {remote_env}
            """))  # StrictModes no: the temp dir's parents (/tmp) are world-writable
        handle = open(log, "wb")
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=handle, stderr=subprocess.STDOUT)
        handle.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None and "Server listening" not in log.read_text():
            time.sleep(0.05)
        if proc.poll() is None and "Server listening" in log.read_text():
            break
        proc.kill()
        proc.wait()
        proc = None
        if "Address already in use" not in log.read_text():
            break
    if proc is None:
        pytest.fail(f"sshd did not start: {log.read_text()[-2000:]}")
    try:
        yield SSHHost(url=f"ssh://{getpass.getuser()}@127.0.0.1:{port}", log=log,
                      good_path=_ssh_wrapper(home / "good", real_ssh, home / "client_key"),
                      wrong_key_path=_ssh_wrapper(home / "wrong", real_ssh, home / "wrong_key"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tiny_image_tar() -> bytes:
    """A one-file rootfs for `docker import`: an image small enough to move in milliseconds."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    return data.getvalue()


@pytest.mark.slow  # 13-16 s on 2 busy cores
def test_a_hardened_sandbox_runs_on_an_engine_reached_over_ssh(ssh_host, base_image, docker_client, monkeypatch):
    monkeypatch.setenv("PATH", ssh_host.good_path)
    logins = ssh_host.accepted_logins()
    hosts = DockerHosts([{"url": ssh_host.url, "name": "ssh", "max_containers": 2}])
    sandboxes = EpisodeSandboxes(hosts=hosts)  # reaps leaked sandboxes over ssh on the way in
    try:
        # The placement layer: the workspace goes to the ssh host (the base image is there already).
        workspace = sandboxes.workspace(base_image, TASK)
        try:
            assert hosts.stats()["ssh"] == {"in_use": 1, "placed": 1, "dead": ""}
            # Commands and files over the container's attach socket, carried by ssh.
            result = workspace.exec("id -u; echo hi")
            assert (result.exit_code, result.output) == (0, "1000\nhi\n")
            workspace.write_file("notes/a.txt", "over ssh\n")
            assert workspace.read_file("notes/a.txt") == "over ssh\n"
            # The hardening holds: read back over the local socket, not over ssh.
            attrs = docker_client.api.inspect_container(workspace.container_id)
            assert attrs["Config"]["User"] == "1000:1000"
            assert attrs["HostConfig"]["NetworkMode"] == "none"
            assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
            assert "no-new-privileges" in " ".join(attrs["HostConfig"]["SecurityOpt"] or [])
        finally:
            workspace.close()
        assert hosts.stats()["ssh"]["in_use"] == 0
        gone = docker_client.containers.list(all=True, filters={"id": workspace.container_id})
        assert gone == []

        # The other transport (one `docker exec` per command) over the same ssh client.
        host = hosts.hosts[0]
        with DockerSandbox(base_image, {"fast_exec": False}, client=host.client) as sandbox:
            assert sandbox.exec("id -u").output == "1000\n"

        # Images stream both ways through ssh (`docker save` out, `docker load` in: how
        # DockerHosts copies a task image to the engine that lacks it).
        tag = f"agent-rl-test/ssh-copy:{uuid.uuid4().hex[:12]}"
        docker_client.api.import_image_from_data(_tiny_image_tar(), repository=tag.split(":")[0], tag=tag.split(":")[1])
        try:
            saved = list(host.client.api.get_image(tag, chunk_size=512))
            docker_client.images.remove(tag)
            assert not host.has_image(tag)
            for _ in host.client.api.load_image(iter(saved)):
                pass
            assert docker_client.images.get(tag).tags == [tag]
        finally:
            try:
                docker_client.images.remove(tag, force=True)
            except Exception:
                pass
        assert ssh_host.accepted_logins() > logins  # it really went through sshd
    finally:
        sandboxes.close()


@pytest.mark.slow  # 13-16 s on 2 busy cores
def test_leaked_sandboxes_on_an_ssh_host_are_reaped_by_label(ssh_host, base_image, docker_client, tmp_path,
                                                             monkeypatch):
    script = textwrap.dedent(f"""
        import time
        from sandboxes.docker import DockerSandbox
        from sandboxes.hosts import DockerHosts
        host = DockerHosts([{{"url": {ssh_host.url!r}}}]).place()
        boxes = [DockerSandbox({base_image!r}, client=host.client) for _ in range(2)]
        print(" ".join(b.container_id for b in boxes), flush=True)
        time.sleep(600)
    """)
    stderr = tmp_path / "child.err"
    with open(stderr, "wb") as err:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=err, text=True,
                                 cwd=ROOT, env={**os.environ, "PATH": ssh_host.good_path})
    try:
        ready, _, _ = select.select([child.stdout], [], [], 120)
        ids = child.stdout.readline().split() if ready else []
        assert len(ids) == 2, f"the child made no sandboxes over ssh: {stderr.read_text()[-3000:]}"
    finally:
        child.kill()  # SIGKILL: no cleanup ran, the containers are leaked
        child.wait()
    owned = {"label": f"{OWNER_PID_LABEL}={child.pid}"}
    assert {c.id for c in docker_client.containers.list(all=True, filters=owned)} == set(ids)

    monkeypatch.setenv("PATH", ssh_host.good_path)
    hosts = DockerHosts([{"url": ssh_host.url, "name": "ssh"}])
    try:
        removed = hosts.reap_leaked()  # what EpisodeSandboxes does on every host when a run starts
    finally:
        hosts.close()
    assert set(ids) <= set(removed)
    assert docker_client.containers.list(all=True, filters=owned) == []


def test_an_unreachable_ssh_host_fails_fast_naming_the_endpoint(ssh_host, base_image, monkeypatch):
    # A key sshd does not know: ssh's own words, the endpoint, no prompt, no hang.
    monkeypatch.setenv("PATH", ssh_host.wrong_key_path)
    started = time.monotonic()
    with pytest.raises(SandboxError, match=re.escape(ssh_host.url) + r".*Permission denied \(publickey"):
        DockerHosts([{"url": ssh_host.url}]).hosts[0].client  # noqa: B018
    assert time.monotonic() - started < 30

    # A closed port: refused, named, and the placement layer marks that host dead and uses the next.
    monkeypatch.setenv("PATH", ssh_host.good_path)
    closed = re.sub(r":\d+$", f":{_free_port()}", ssh_host.url)
    started = time.monotonic()
    with pytest.raises(SandboxError, match=re.escape(closed) + r".*Connection refused"):
        DockerHosts([{"url": closed}]).hosts[0].client  # noqa: B018
    assert time.monotonic() - started < 30

    hosts = DockerHosts([{"url": closed, "name": "closed"}, {"url": ssh_host.url, "name": "ssh"}])
    sandboxes = EpisodeSandboxes(hosts=hosts)
    try:
        workspace = sandboxes.workspace(base_image, TASK)  # "closed" is tried first (a tie goes to the first)
        try:
            assert workspace.exec("echo hi").output == "hi\n"
        finally:
            workspace.close()
        stats = hosts.stats()
        assert closed in stats["closed"]["dead"] and "Connection refused" in stats["closed"]["dead"]
        assert (stats["ssh"]["placed"], stats["ssh"]["dead"]) == (1, "")
    finally:
        sandboxes.close()

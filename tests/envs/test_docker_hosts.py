"""Episodes over two real Docker engines: spread, graded correctly, and a vanished engine.

The second engine is a real `dockerd` started by the fixture with its own socket, data root,
exec root and containerd, in its own network namespace (so it never touches the main
engine's docker0) and with the main engine's storage driver. It starts with no images: the task image is copied to it from the
first engine when a sandbox is placed there. Killing that daemon mid-episode is the host
vanishing: the episode on it ends as `sandbox_died`, is graded on the other engine, and the
next episode is placed on the engine that remains.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
from tinytask import make_tiny_task

from envs.swe_env import SWEEnv

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MAIN = "unix:///var/run/docker.sock"
FIX = ("```edit calc/ops.py\n<<<<<<< SEARCH\ndef add(a, b):\n    return a - b\n"
       "=======\ndef add(a, b):\n    return a + b\n>>>>>>> REPLACE\n```")
SUBMIT = "Done.\n```submit\n```"


def _extra_engine(tls: bool):
    from sandboxes.local_dockerd import ExtraDockerd

    if shutil.which("dockerd") is None or shutil.which("unshare") is None or os.geteuid() != 0:
        why = "a second Docker engine needs the dockerd and unshare binaries and root"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true: {why}; the multi-host tests must run")
        pytest.skip(why)
    engine = ExtraDockerd.for_main_engine(tls=tls)
    engine.start()
    return engine


@pytest.fixture(scope="module")
def second_engine(docker_engine):
    engine = _extra_engine(tls=False)
    yield engine
    engine.shutdown()  # whatever state the test left it in


@pytest.fixture(scope="module")
def tls_engine(docker_engine):
    """A second engine at another address (its own network namespace, linked by a veth pair)
    that only speaks dockerd's own mutual TLS on TCP."""
    engine = _extra_engine(tls=True)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return make_tiny_task(tmp_path_factory.mktemp("hosts"))


def _config(second: str) -> dict:
    return {"max_turns": 5, "docker_hosts": [{"url": MAIN, "name": "main", "max_containers": 1},
                                             {"url": second, "name": "second", "max_containers": 1}]}


def test_episodes_spread_over_two_engines_and_grade_correctly(task, second_engine):
    with SWEEnv(tasks=[task], config=_config(second_engine.url)) as first, \
            SWEEnv(tasks=[task], config=_config(second_engine.url)) as other:
        # Separate envs own separate DockerHosts; make them share one so placement sees both.
        other._own_sandboxes.hosts = first._own_sandboxes.hosts
        hosts = first._own_sandboxes.hosts
        first.reset()
        other.reset()  # main is full (1 container), so this workspace goes to the second engine
        assert {name: s["in_use"] for name, s in hosts.stats().items()} == {"main": 1, "second": 1}
        for env in (first, other):
            obs, *_ = env.step(FIX)
            assert "return a + b" in obs
            obs, reward, terminated, truncated, info = env.step(SUBMIT)
            assert (reward, terminated) == (1.0, True) and info["grade"]["resolved"], json.dumps(info["grade"])[:3000]
        stats = hosts.stats()
        assert stats["main"]["placed"] >= 2 and stats["second"]["placed"] >= 2  # workspaces and graders
        assert stats["main"]["in_use"] == 0 and stats["second"]["in_use"] == 0  # every container released
        other._own_sandboxes.hosts = None  # closed once, by its owner


def test_a_vanished_engine_ends_its_episode_graded_and_new_ones_go_elsewhere(task, second_engine):
    if not second_engine.running:
        second_engine.start()
    config = _config(second_engine.url)
    config["docker_hosts"][0]["max_containers"] = 4
    config["docker_hosts"][1]["max_containers"] = 8  # the first workspace lands on the second engine
    with SWEEnv(tasks=[task], config=config) as env:
        hosts = env._own_sandboxes.hosts
        env.reset()
        assert hosts.stats()["second"]["in_use"] == 1
        env.step(FIX)
        second_engine.kill()
        obs, reward, terminated, truncated, info = env.step("```bash\nls\n```")
        assert info["end_reason"] == "sandbox_died" and "grade" in info
        assert (reward, terminated, truncated) == (0.0, False, True)  # the fix died with its host
        assert hosts.stats()["second"]["dead"]  # found out when the grader was placed
        env.reset()
        assert hosts.stats()["main"]["in_use"] == 1
        env.step(FIX)
        obs, reward, terminated, truncated, info = env.step(SUBMIT)
        assert reward == 1.0 and info["grade"]["resolved"]


def test_the_main_engines_default_network_survives_the_second_engine(second_engine):
    """A second daemon must not touch the host's networking: the main engine's default bridge
    network still starts containers after the other tests started, killed and restarted it."""
    import docker

    client = docker.from_env()
    try:
        client.containers.run("agent-rl/base:latest", ["true"], remove=True)
    finally:
        client.close()


def test_an_engine_over_tcp_with_tls_runs_and_grades_an_episode(task, tls_engine, tmp_path):
    """tcp:// with TLS for real: the task image is copied to the engine over TLS, the episode's
    workspace and its grader run there, and the verdict is right. REQUESTS_CA_BUNDLE is set on
    this machine: the engine's own CA must win over it."""
    from sandboxes.hosts import DockerHostConfig, _make_client
    from sandboxes.local_dockerd import make_tls_certs

    config = {"max_turns": 5, "docker_hosts": [{"url": tls_engine.tcp_url, "name": "tls", "max_containers": 4,
                                                **tls_engine.tls_files}]}
    with SWEEnv(tasks=[task], config=config) as env:
        hosts = env._own_sandboxes.hosts
        env.reset()
        assert hosts.stats()["tls"]["in_use"] == 1
        obs, *_ = env.step(FIX)
        assert "return a + b" in obs
        obs, reward, terminated, truncated, info = env.step(SUBMIT)
        assert (reward, terminated) == (1.0, True) and info["grade"]["resolved"], json.dumps(info["grade"])[:3000]
        assert hosts.stats()["tls"]["placed"] >= 2  # the workspace and the grader

    # A client certificate from another CA is refused by the engine (mutual TLS, not just encryption).
    foreign = make_tls_certs(tmp_path / "foreign", "127.0.0.1")
    with pytest.raises(Exception, match="(?i)ssl|certificate|tls"):
        _make_client(DockerHostConfig(url=tls_engine.tcp_url, tls_ca=tls_engine.tls_files["tls_ca"],
                                      tls_cert=foreign["client_cert"], tls_key=foreign["client_key"]))

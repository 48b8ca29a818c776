"""DockerHosts without an engine: endpoint validation and placement by free capacity."""
from __future__ import annotations

import pytest

from sandboxes.hosts import DockerHostConfig, DockerHosts, NoLiveHost
from strictconfig import ConfigError


def test_endpoints_are_checked():
    assert DockerHostConfig(url="ssh://agent@10.0.0.7").label == "ssh://agent@10.0.0.7"
    DockerHostConfig(url="ssh://agent@10.0.0.7:2222")  # a real sshd: tests/sandboxes/test_ssh_docker_host.py
    with pytest.raises(ValueError, match="port"):
        DockerHostConfig(url="ssh://agent@10.0.0.7:ssh")
    with pytest.raises(ValueError, match="needs a host"):
        DockerHostConfig(url="ssh:///var/run/docker.sock")
    with pytest.raises(ValueError, match="scheme must be one of unix, tcp, ssh"):
        DockerHostConfig(url="http://10.0.0.7:2375")
    with pytest.raises(ValueError, match="needs tls_ca, tls_cert and tls_key"):
        DockerHostConfig(url="tcp://10.0.0.7:2375")
    DockerHostConfig(url="tcp://10.0.0.7:2376", tls_ca="ca.pem", tls_cert="cert.pem", tls_key="key.pem")
    with pytest.raises(ConfigError, match="unknown key"):
        DockerHostConfig.from_config({"url": "unix:///x.sock", "max_container": 3})
    with pytest.raises(ValueError, match="distinct names"):
        DockerHosts([{"url": "unix:///a.sock", "name": "a"}, {"url": "unix:///b.sock", "name": "a"}])


def test_placement_follows_free_capacity_and_skips_dead_hosts():
    hosts = DockerHosts([{"url": "unix:///a.sock", "name": "a", "max_containers": 2},
                         {"url": "unix:///b.sock", "name": "b", "max_containers": 4}])
    order = [hosts.place().name for _ in range(4)]
    assert order == ["b", "b", "a", "b"]  # b has more room until both have 1 free; ties go to the less used
    a, b = hosts.hosts
    assert (a.in_use, b.in_use) == (1, 3)
    hosts.release(b)
    hosts.mark_dead(b, "engine gone")
    assert hosts.place() is a  # the only live one, full or not
    hosts.mark_dead(a, "engine gone too")
    with pytest.raises(NoLiveHost, match="a: engine gone too; b: engine gone"):
        hosts.place()

"""Fixtures for the sandbox tests: one base image per session, sandboxes always removed."""
from __future__ import annotations

import concurrent.futures

import pytest


@pytest.fixture(scope="session")
def docker_client(docker_engine):
    import docker

    client = docker.from_env(timeout=600)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    from sandboxes.images import ensure_base_image

    return ensure_base_image(docker_client, progress=lambda message: None)


@pytest.fixture
def make_sandbox(docker_client, base_image):
    """Factory for DockerSandboxes that are removed after the test, whatever happens."""
    from sandboxes.docker import DockerSandbox

    made = []

    def make(config=None, image=None):
        sandbox = DockerSandbox(image or base_image, config, client=docker_client)
        made.append(sandbox)
        return sandbox

    yield make
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda sandbox: sandbox.close(), made))

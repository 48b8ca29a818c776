"""Shared fixtures and marker policy.

Under CI=true a missing Docker engine is a failure, not a skip: the Docker tests must
actually run in CI. Locally, without Docker, they skip with the reason.
"""
from __future__ import annotations

import functools
import os

import pytest


@functools.lru_cache(maxsize=1)
def docker_status() -> tuple[bool, str]:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        client.close()
        return True, ""
    except Exception as exc:  # any failure means "no usable engine"
        return False, f"{type(exc).__name__}: {exc}"


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_docker() -> None:
    """Skip without a Docker engine locally; fail under CI=true, where Docker tests must run."""
    ok, why = docker_status()
    if not ok:
        if in_ci():
            pytest.fail(f"CI=true and the Docker engine does not answer ({why}); Docker tests must run")
        pytest.skip(f"no Docker engine: {why}")


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """For module/session fixtures that need Docker: they run before the function-level
    marker check below, so they must apply the same policy themselves."""
    require_docker()


@pytest.fixture(autouse=True)
def _enforce_markers(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("docker"):
        require_docker()
    if request.node.get_closest_marker("gpu") and not gpu_available():
        pytest.skip("no CUDA GPU")

"""`agent-rl doctor`: check that this machine can run sandboxes, with actionable messages."""
from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable

OK, WARN, FAIL = "ok", "warn", "FAIL"
MIN_OPEN_FILES = 4096
MIN_FREE_GIB = 3.0


@dataclass
class Check:
    name: str
    status: str
    message: str


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="check Docker, sandbox hardening, disk, file limits, images and GPU",
        description="Run environment checks. Exits non-zero only on hard failures (no Docker engine, "
        "a hardening option the engine refuses).",
    )
    p.set_defaults(func=run)


def _docker_engine(state: dict) -> Check:
    try:
        import docker

        client = docker.from_env(timeout=20)
        version = client.version()
    except Exception as exc:
        return Check("docker engine", FAIL, f"no answer ({exc}). Start dockerd or set DOCKER_HOST; "
                                            "the user needs access to the Docker socket.")
    state["client"] = client
    return Check("docker engine", OK, f"engine {version.get('Version')} (API {version.get('ApiVersion')})")


def _base_image(state: dict) -> Check:
    client = state.get("client")
    if client is None:
        return Check("base image", FAIL, "skipped: no Docker engine")
    from sandboxes.images import BASE_ALIAS, image_exists, base_image_tag

    expected = base_image_tag()
    if image_exists(client, expected):
        state["image"] = expected
        return Check("base image", OK, expected)
    if image_exists(client, BASE_ALIAS):
        state["image"] = BASE_ALIAS
        return Check("base image", WARN, f"{BASE_ALIAS} exists but is stale (current inputs give {expected}); "
                                         "run `agent-rl images build`")
    hint = "" if shutil.which("debootstrap") else " (needs debootstrap: apt-get install debootstrap)"
    return Check("base image", WARN, f"missing; run `agent-rl images build`{hint}")


def _hardening(state: dict) -> Check:
    client, image = state.get("client"), state.get("image")
    if client is None:
        return Check("sandbox hardening", FAIL, "skipped: no Docker engine")
    if image is None:
        return Check("sandbox hardening", WARN, "skipped: no base image to start a test container from")
    from sandboxes.base import HardeningUnsupported
    from sandboxes.docker import DockerSandbox

    try:
        with DockerSandbox(image, {"mem_limit": "256m"}, client=client) as sandbox:
            status = sandbox.exec("id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; ls /sys/class/net",
                                  timeout=30).output.split()
    except HardeningUnsupported as exc:
        return Check("sandbox hardening", FAIL, f"{exc}. Use a kernel/engine with cgroup pids, memory and "
                                                "CPU controllers, or relax that key explicitly in the config.")
    except Exception as exc:
        return Check("sandbox hardening", FAIL, f"could not start a hardened container: {exc}")
    expected = ["1000", "CapEff:", "0000000000000000", "NoNewPrivs:", "1", "lo"]
    if status != expected:
        return Check("sandbox hardening", FAIL, f"container state differs from the hardened defaults: {status}")
    return Check("sandbox hardening", OK, "non-root, no capabilities, no-new-privileges, no network, "
                                          "pids/memory/CPU limits accepted")


def _disk(state: dict) -> Check:
    paths = [tempfile.gettempdir()]
    client = state.get("client")
    if client is not None:
        try:
            paths.append(client.info().get("DockerRootDir", ""))
        except Exception:
            pass
    lows = []
    for path in filter(None, paths):
        try:
            free = shutil.disk_usage(path).free / 1024**3
        except OSError:
            continue  # e.g. the engine's root dir is on another machine
        if free < MIN_FREE_GIB:
            lows.append(f"{path}: {free:.1f} GiB")
    if lows:
        return Check("free disk", WARN, f"low ({', '.join(lows)}); images need ~{MIN_FREE_GIB:.0f} GiB. "
                                        "Free space or `agent-rl images prune --all`.")
    return Check("free disk", OK, f">= {MIN_FREE_GIB:.0f} GiB under {', '.join(filter(None, paths))}")


def _open_files(state: dict) -> Check:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < MIN_OPEN_FILES:
        return Check("open files", WARN, f"soft limit {soft} (hard {hard}); many concurrent sandboxes need "
                                         f"more: `ulimit -n {min(hard, 65536) if hard > 0 else 65536}`")
    return Check("open files", OK, f"soft limit {soft}")


def _gpu(state: dict) -> Check:
    try:
        import torch
    except Exception as exc:
        return Check("gpu", WARN, f"torch not importable ({exc}); training needs it")
    if torch.cuda.is_available():
        return Check("gpu", OK, f"{torch.cuda.device_count()} CUDA device(s): {torch.cuda.get_device_name(0)}")
    return Check("gpu", WARN, "torch sees no CUDA GPU: training and generation run on CPU (slow)")


CHECKS: tuple[Callable[[dict], Check], ...] = (_docker_engine, _base_image, _hardening, _disk, _open_files, _gpu)


def run_checks() -> list[Check]:
    state: dict = {}
    return [check(state) for check in CHECKS]


def run(args: argparse.Namespace) -> int:
    checks = run_checks()
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="agent-rl doctor")
        for column in ("check", "status", "details"):
            table.add_column(column)
        colours = {OK: "green", WARN: "yellow", FAIL: "red"}
        for check in checks:
            table.add_row(check.name, f"[{colours[check.status]}]{check.status}[/]", check.message)
        Console().print(table)
    except ImportError:
        for check in checks:
            print(f"{check.status:>4}  {check.name:<18} {check.message}")
    return 1 if any(check.status == FAIL for check in checks) else 0

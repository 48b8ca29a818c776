"""SandboxPool against the real engine: warm hand-out, no reuse, concurrency bound."""
from __future__ import annotations

import docker.errors
import pytest

from sandboxes.pool import PoolClosed, SandboxPool

pytestmark = pytest.mark.docker


def _exists(client, container_id: str) -> bool:
    try:
        client.api.inspect_container(container_id)
        return True
    except docker.errors.NotFound:
        return False


def test_warm_sandboxes_are_fresh_every_time(docker_client, base_image):
    with SandboxPool(base_image, size=2, client=docker_client) as pool:
        assert pool.wait_warm(timeout=120)
        first = pool.acquire()
        first.write_file("leak.txt", "secret")
        first.exec("sleep 4321 &")
        first.close()
        assert not _exists(docker_client, first.container_id)
        with pool.sandbox() as second:
            assert second.container_id != first.container_id
            assert second.exec("ls /testbed; pgrep -f 'slee[p] 4321' || echo none").output == "none\n"
        assert pool.wait_warm(timeout=120)  # refilled in the background
        warm = [s.container_id for s in list(pool._ready.queue)]
    assert warm and not any(_exists(docker_client, cid) for cid in warm)  # close() destroyed them


def test_concurrency_limit_and_closed_pool(docker_client, base_image):
    pool = SandboxPool(base_image, {"mem_limit": "256m"}, size=0, max_concurrency=2, client=docker_client)
    try:
        a, b = pool.acquire(), pool.acquire()
        with pytest.raises(TimeoutError, match="max_concurrency"):
            pool.acquire(timeout=0.2)
        a.close()
        c = pool.acquire(timeout=30)
        assert c.exec("echo ok").output == "ok\n"
        b.close()
        c.close()
    finally:
        pool.close()
    with pytest.raises(PoolClosed):
        pool.acquire()


async def test_async_acquire_and_dead_warm_sandbox_is_skipped(docker_client, base_image):
    async with SandboxPool(base_image, size=1, client=docker_client) as pool:
        assert pool.wait_warm(timeout=120)
        docker_client.api.kill(pool._ready.queue[0].container_id)  # dies while idle
        async with pool.asandbox() as sandbox:
            assert (await sandbox.aexec("echo fresh")).output == "fresh\n"


def test_resize_and_start_counters(docker_client, base_image):
    with SandboxPool(base_image, size=0, client=docker_client, reap_leaked=False) as pool:
        assert pool.stats() == {"started": 0, "cold_starts": 0, "warm": 0} and not pool._fillers
        with pool.sandbox():  # nothing warm: started on the caller's critical path
            pass
        assert pool.stats()["cold_starts"] == 1
        pool.resize(2)  # fillers start lazily and fill in the background
        assert pool.wait_warm(timeout=120)
        with pool.sandbox():
            pass
        assert pool.stats()["cold_starts"] == 1  # taken warm
        assert pool.wait_warm(timeout=120)  # the taken one was replaced
        warm = [s.container_id for s in list(pool._ready.queue)]
        pool.resize(0)  # surplus warm sandboxes are destroyed now
        assert pool.warm_count() == 0 and not any(_exists(docker_client, cid) for cid in warm)
        assert pool.stats()["started"] == 4


def test_acquire_without_timeout_waits_for_a_slot(docker_client, base_image):
    import threading

    with SandboxPool(base_image, size=0, max_concurrency=1, client=docker_client, reap_leaked=False) as pool:
        first = pool.acquire()
        threading.Timer(0.5, first.close).start()  # e.g. a removal finishing in the background
        with pool.sandbox() as second:  # no timeout: waits for the slot instead of failing at once
            assert second.container_id != first.container_id

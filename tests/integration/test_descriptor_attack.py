"""Issue 14's descriptor attack on a real balancer with a 1,024-descriptor limit: 1,100 clients
each announce a 100 kB body and never send it; the replica answers at once (405), so before
the fix no timeout applied, the descriptors ran out, every health probe failed and a healthy
replica was evicted and replaced 69 times in 70 s. Now: connections past max_connections are
refused at once, the stuck ones close after the client timeout, the probes keep passing and the
ring never changes. Alone and in shared mode (Redis). Traffic to 127.0.0.1 only; bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.balancer_process import BalancerProcess
from tests.support.redis_process import RedisProcess, redis_binary

pytestmark = pytest.mark.slow

CLIENTS = 1100
NOFILE = 1024
CLIENT_TIMEOUT_S = 3.0
STUCK = b"POST /home?id=%d HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"


@pytest.fixture(params=["alone", "shared"])
def balancer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BalancerProcess]:
    args = ["--replicas", "3", "--client-timeout-s", str(CLIENT_TIMEOUT_S)]
    redis: RedisProcess | None = None
    if request.param == "shared":
        if redis_binary() is None:
            pytest.skip("needs the redis-server binary (CI installs it)")
        redis = RedisProcess(tmp_path / "redis", persistent=False)
        redis.start()
        args += ["--redis-url", redis.url]
    lb = BalancerProcess(tmp_path / "balancer.log", *args, nofile=NOFILE)
    try:
        lb.wait_listening()
        yield lb
    finally:
        lb.stop()
        if redis is not None:
            redis.stop()


async def _status(s: aiohttp.ClientSession, lb: BalancerProcess) -> dict:  # type: ignore[type-arg]
    async with s.get(f"{lb.url}/lb/status", timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return await resp.json()  # type: ignore[no-any-return]


async def _ready(s: aiohttp.ClientSession, lb: BalancerProcess) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            status = await _status(s, lb)
            if len(status["replicas"]) == 3 and all(r["alive"] for r in status["replicas"]):
                return status
        await asyncio.sleep(0.2)
    raise AssertionError("balancer not ready")


async def _stuck_client(port: int, i: int, opened: list[asyncio.StreamWriter]) -> None:
    # A refused connection is reset at once: opening or writing may fail, as it should.
    with contextlib.suppress(OSError, RuntimeError):
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        opened.append(writer)
        writer.write(STUCK % i)


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_stuck_uploads_do_not_exhaust_descriptors_or_evict_replicas(
    balancer: BalancerProcess,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * CLIENTS + 256:  # this process opens the attack's 1,100 sockets
        if hard < 2 * CLIENTS + 256:
            pytest.skip(f"needs {2 * CLIENTS + 256} descriptors in the test process, has {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    async with aiohttp.ClientSession() as s:
        before = await _ready(s, balancer)
        baseline = _descriptors(balancer.proc.pid)
        opened: list[asyncio.StreamWriter] = []
        try:
            await asyncio.gather(*(_stuck_client(balancer.port, i, opened) for i in range(CLIENTS)))
            await asyncio.sleep(1.0)
            during = _descriptors(balancer.proc.pid)
            # The data path still answers while the attack holds its connections.
            async with s.get(f"{balancer.url}/home?id=1") as resp:
                assert resp.status == 200
            await asyncio.sleep(CLIENT_TIMEOUT_S + 2.0)  # the client timeout closes them
            after = _descriptors(balancer.proc.pid)
            status = await _status(s, balancer)
        finally:
            for w in opened:
                w.transport.abort()
    print(
        f"\n[descriptor attack] {CLIENTS} stuck clients, limit {NOFILE}: balancer descriptors "
        f"{baseline} before, {during} during, {after} after the client timeout; epoch "
        f"{before['epoch']} → {status['epoch']}"
    )
    assert during < NOFILE - 100  # max_connections kept a reserve for probes and replicas
    assert after <= baseline + 20
    assert status["epoch"] == before["epoch"]  # no replica was evicted or replaced
    assert [r["name"] for r in status["replicas"]] == [r["name"] for r in before["replicas"]]

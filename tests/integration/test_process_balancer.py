"""The real thing: ``python -m balancer`` with the process runtime, driven over real sockets."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.balancer_process import BalancerProcess
from tests.support.cluster import pid_alive

pytestmark = pytest.mark.slow


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[BalancerProcess]:
    lb = BalancerProcess(tmp_path / "balancer.log")
    try:
        lb.wait_listening()
        yield lb
    finally:
        lb.stop()


async def get_json(session: aiohttp.ClientSession, url: str) -> dict:  # type: ignore[type-arg]
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return await resp.json()  # type: ignore[no-any-return]


async def test_10k_concurrent_requests_spread_over_3_replicas(balancer: BalancerProcess) -> None:
    counts: collections.Counter[str] = collections.Counter()
    failures = 0

    async with aiohttp.ClientSession() as session:  # the reference client: default connector

        async def one() -> None:
            nonlocal failures
            try:
                async with session.get(f"{balancer.url}/home") as resp:
                    body = await resp.json()
                    if resp.status != 200:
                        failures += 1
                        return
                    counts[body["message"].split()[-1]] += 1
            except aiohttp.ClientError:
                failures += 1

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(10_000))), 120)
        took = time.monotonic() - started
    print(f"10k requests in {took:.2f}s; spread {dict(counts)}")
    assert failures == 0
    assert set(counts) == {"1", "2", "3"}
    assert sum(counts.values()) == 10_000
    # Random 6-digit ids over a 160-point ring: every replica well above a quarter.
    assert min(counts.values()) > 2_500, counts


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
async def test_failed_replica_is_replaced_within_3s(balancer: BalancerProcess, sig: int) -> None:
    """SIGKILL: connections refused. SIGSTOP: a hung replica, heartbeats time out."""
    async with aiohttp.ClientSession() as session:
        status = await get_json(session, f"{balancer.url}/lb/status")
        victim = status["replicas"][1]
        os.kill(victim["pid"], sig)
        killed_at = time.monotonic()
        while True:
            rep = (await get_json(session, f"{balancer.url}/rep"))["message"]
            if victim["name"] not in rep["replicas"] and rep["N"] == 3:
                break
            assert time.monotonic() - killed_at < 3.0, f"not replaced in 3 s: {rep}"
            await asyncio.sleep(0.02)
        took = time.monotonic() - killed_at
        print(f"{signal.Signals(sig).name}: replaced in {took:.2f}s")
        new = [n for n in rep["replicas"] if n not in {r["name"] for r in status["replicas"]}]
        assert len(new) == 1
        served = set()
        for i in range(200):
            body = await get_json(session, f"{balancer.url}/home?id={i}")
            served.add(body["message"].split()[-1])
        assert served == {n.removeprefix("Server ") for n in rep["replicas"]}
    assert not pid_alive(victim["pid"])  # a hung replica is killed, not left stopped


async def test_add_then_rm_change_n_and_only_then(balancer: BalancerProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{balancer.url}/add", json={"n": 2, "hostnames": ["S5"]}) as r:
            assert r.status == 200
            added = (await r.json())["message"]
        assert added["N"] == 5 and "S5" in added["replicas"]
        await asyncio.sleep(1.5)  # several heartbeat rounds: nothing else changes N
        assert (await get_json(session, f"{balancer.url}/rep"))["message"] == added
        async with session.delete(f"{balancer.url}/rm", json={"n": 3}) as r:
            assert r.status == 200
            removed = (await r.json())["message"]
        assert removed["N"] == 2
        await asyncio.sleep(1.5)  # a removal is never respawned
        assert (await get_json(session, f"{balancer.url}/rep"))["message"] == removed
        status = await get_json(session, f"{balancer.url}/lb/status")
        assert [r["name"] for r in status["replicas"]] == removed["replicas"]
        assert all(r["alive"] and r["pid"] for r in status["replicas"])


def test_sigint_stops_every_replica(tmp_path: Path) -> None:
    lb = BalancerProcess(tmp_path / "balancer.log", "--replicas", "2")
    try:
        lb.wait_listening()
        status = asyncio.run(_status(lb.url))
        pids = [r["pid"] for r in status["replicas"]]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    finally:
        lb.stop()
    assert lb.proc.returncode == 0
    assert not any(pid_alive(p) for p in pids)


async def _status(url: str) -> dict:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as session:
        return await get_json(session, f"{url}/lb/status")


def child_pids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


async def test_workers_share_the_ring_and_report_metrics(tmp_path: Path) -> None:
    lb = BalancerProcess(tmp_path / "balancer.log", "--workers", "2")
    try:
        lb.wait_listening()
        await asyncio.sleep(1.0)  # the worker binds the same port (SO_REUSEPORT)
        # Many fresh connections: the kernel spreads them over both processes.
        ids: collections.Counter[str] = collections.Counter()
        for i in range(300):
            async with aiohttp.ClientSession() as session:
                body = await get_json(session, f"{lb.url}/home?id={i}")
                ids[body["message"].split()[-1]] += 1
        assert set(ids) == {"1", "2", "3"} and sum(ids.values()) == 300
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{lb.url}/add", json={"n": 1, "hostnames": ["W9"]}) as r,
        ):
            assert r.status == 200
        served = set()
        for i in range(300):  # after /add, both processes route to the new replica too
            async with aiohttp.ClientSession() as session:
                body = await get_json(session, f"{lb.url}/home?id={1000 + i}")
                served.add(body["message"].split()[-1])
        assert "W9" in served
        await asyncio.sleep(1.5)  # workers push their counters every second
        async with aiohttp.ClientSession() as session, session.get(f"{lb.url}/metrics") as r:
            text = await r.text()
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("lb_upstream_responses_total{")
        )
        assert total == 600  # both processes counted, admin requests not
        workers = [p for p in child_pids(lb.proc.pid) if "balancer" in _cmdline(p)]
        assert len(workers) == 1
    finally:
        lb.stop()
    assert lb.proc.returncode == 0
    assert not pid_alive(workers[0])


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()

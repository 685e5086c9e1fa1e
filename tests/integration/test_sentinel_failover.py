"""Redis failover through Sentinel under load, with real processes.

A Redis primary, one replica and three ``redis-sentinel`` processes (down after 1 s) on
127.0.0.1; two ``python -m balancer`` instances given ``--redis-sentinel``, which boot three
process replicas. Under a steady bounded GET load through both instances the primary is
SIGKILLed. Measured and printed (``pytest -s``): failed proxied GETs (must be 0: routing goes on
over the last ring while the state is away), the failover window (SIGKILL → the first ``/add``
answered 200; ``/add`` may answer 503 before), and the lease: afterwards a leader holds a
strictly greater fencing token, no replica process was started twice (the three are the same
processes, plus the one ``/add`` started), and a replica killed after the failover is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from balancer.state import keys
from tests.support.cluster import (
    Cluster,
    Instance,
    Json,
    Load,
    call,
    replica_processes,
    session,
    wait_converged,
)
from tests.support.sentinel import MASTER_NAME, SentinelGroup, command, sentinel_binary

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        sentinel_binary() is None, reason="needs redis-sentinel (Debian package redis-sentinel)"
    ),
]

ADDED = "after-failover"


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> Iterator[tuple[SentinelGroup, Cluster]]:
    group = SentinelGroup(tmp_path / "redis", replicas=1, sentinels=3)
    try:
        args = ("--redis-sentinel", group.flag, "--redis-master-name", MASTER_NAME)
        cluster = Cluster(tmp_path, group.master, args)
        try:
            cluster.start(2)
            yield group, cluster
        except BaseException:
            print(cluster.logs(), group.logs())
            raise
        finally:
            cluster.close()
    finally:
        group.stop()


def lease(group: SentinelGroup) -> tuple[str, int]:
    """(instance, token) of the lease on the master the Sentinels name now."""
    port = group.master_port()
    assert port is not None, "no master agreed on"
    value = command(port, "GET", keys.leader()).decode()
    instance, _, token = value.rpartition(":")
    return instance, int(token)


async def add_until_accepted(
    s: aiohttp.ClientSession, instances: list[Instance], since: float
) -> tuple[float, list[str]]:
    """``/add`` one named replica, each try to the next instance, until one answers 200; the
    seconds since ``since`` and the answers before it."""
    refused: list[str] = []
    for attempt in range(200):
        target = instances[attempt % len(instances)]
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            code, body = await call(s, "POST", f"{target.url}/add", {"n": 1, "hostnames": [ADDED]})
            if code == 200:
                return time.monotonic() - since, refused
            refused.append(f"{target.name} {code} {body.get('message')}")
        await asyncio.sleep(0.1)
    pytest.fail(f"/add never accepted: {refused[-5:]}")


async def promotion(group: SentinelGroup, old: int, since: float) -> float:
    """Seconds from ``since`` until a majority of the Sentinels name a master other than
    ``old``."""
    for _ in range(1500):
        if await asyncio.to_thread(group.moved_from, old):
            return time.monotonic() - since
        await asyncio.sleep(0.02)
    pytest.fail("the Sentinels named no new master")


async def replaced(
    s: aiohttp.ClientSession, instances: list[Instance], gone: str, timeout_s: float
) -> tuple[float, list[Json]]:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(AssertionError):
            _, statuses = await wait_converged(s, instances, 2.0, replicas=4)
            if gone not in {r["name"] for r in statuses[0]["replicas"]}:
                return time.monotonic() - started, statuses
        await asyncio.sleep(0.05)
    pytest.fail(f"{gone} was not replaced within {timeout_s}s")


async def test_sigkill_of_the_redis_primary_under_load(
    sentinel_cluster: tuple[SentinelGroup, Cluster],
) -> None:
    group, cluster = sentinel_cluster
    async with session(limit=32) as s:
        _, statuses = await wait_converged(s, cluster.instances, 30.0)
        pids_before = sorted(r["pid"] for r in statuses[0]["replicas"])
        holder, token_before = await asyncio.to_thread(lease, group)
        load = Load(cluster.instances, clients=8, max_requests=40_000)
        traffic = asyncio.create_task(load.run(s, duration_s=12.0))
        await asyncio.sleep(1.5)
        primary = group.master
        killed = time.monotonic()
        await asyncio.to_thread(primary.stop, signal.SIGKILL)
        promoted = asyncio.create_task(promotion(group, primary.port, killed))
        window, refused = await add_until_accepted(s, cluster.instances, killed)
        promoted_s = await asyncio.wait_for(promoted, 30.0)
        _, statuses = await wait_converged(s, cluster.instances, 20.0, replicas=4)
        await asyncio.wait_for(traffic, 40.0)
        moved = await asyncio.to_thread(group.master_port)
        holder_after, token_after = await asyncio.to_thread(lease, group)
        processes = sorted(replica_processes(cluster.tag))
        # A replica killed after the failover is replaced by the (new term's) leader.
        victim = next(r for r in statuses[0]["replicas"] if r["pid"] in pids_before)
        os.kill(victim["pid"], signal.SIGKILL)
        took, _ = await replaced(s, cluster.instances, victim["name"], 20.0)
    print(
        f"\n[sentinel failover] primary {primary.port} SIGKILLed, master now {moved}; "
        f"Sentinels named it {promoted_s:.2f}s after the SIGKILL; "
        f"{load.sent} GETs through both instances, {len(load.failures)} failed; /add accepted "
        f"{window:.2f}s after the SIGKILL ({len(refused)} refused before: "
        f"{sorted({r.split(' ', 2)[1] for r in refused})}); lease {holder}:{token_before} → "
        f"{holder_after}:{token_after}; a replica killed afterwards replaced in {took:.2f}s; "
        f"replica processes {pids_before} → {processes}"
    )
    assert moved is not None and moved != primary.port
    assert not load.failures, load.failures[:10]
    assert token_after > token_before
    assert all(r.split(" ", 2)[1] == "503" for r in refused), refused  # only 503s, never 5xx
    # No replica started twice: the three adopted as they were, plus the one /add started.
    assert set(pids_before) < set(processes) and len(processes) == 4, (pids_before, processes)

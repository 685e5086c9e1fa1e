"""Fencing across a failover that loses writes, over a real master and replica.

The elector and store run with ``replicated=True`` (what ``sentinel_backend`` builds). A failover
is simulated without Sentinel: the replica is promoted with ``REPLICAOF NO ONE`` while the old
master goes on taking writes the replica never sees (the writes a failover loses), and a client
is "moved" to the promoted server the way a Sentinel-managed pool moves: its connections are
dropped and new ones go to the new address. What must hold: a token minted before the failover
is refused on the promoted server even when its counter holds that very value; the next token
is strictly greater than any the old master minted; and no term starts before a replica holds
its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from balancer.errors import StaleLeaderError
from balancer.state import keys
from balancer.state.redis_leadership import FENCE_JUMP, LeaderElector
from balancer.state.redis_store import RedisStore
from tests.state.conftest import replica
from tests.support.redis_process import redis_binary
from tests.support.sentinel import RedisNode

pytestmark = pytest.mark.skipif(
    redis_binary() is None, reason="needs the redis-server binary (CI installs it)"
)

TTL_S = 0.6


class Pair:
    """A master and one replica in sync."""

    def __init__(self, workdir: Path) -> None:
        self.master = RedisNode(workdir / "m")
        self.master.start()
        self.replica = RedisNode(workdir / "r", replica_of=self.master.port)
        self.replica.start()

    def stop(self) -> None:
        self.replica.stop(signal.SIGKILL)
        self.master.stop(signal.SIGKILL)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    made = Pair(tmp_path)
    try:
        yield made
    finally:
        made.stop()


def connect(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2.0, socket_connect_timeout=2.0)


async def move(client: redis.Redis, port: int) -> None:
    """Point ``client`` at another server, as a Sentinel pool does after a failover."""
    pool = client.connection_pool
    pool.connection_kwargs["port"] = port
    await pool.disconnect()
    pool.reset()  # type: ignore[no-untyped-call]  # the pool keeps its connection objects, each with its old address


async def wait_until(check: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.01)


async def synced(master: redis.Redis, replica_client: redis.Redis) -> None:
    """Until the replica's link is up and it has the master's keys."""
    for _ in range(500):
        info = await replica_client.info("replication")
        if info.get("master_link_status") == "up" and await master.wait(1, 100) >= 1:
            return
        await asyncio.sleep(0.01)
    pytest.fail("the replica did not sync")


@contextlib.asynccontextmanager
async def campaigning(*electors: LeaderElector) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(e.run()) for e in electors]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=3.0)


@contextlib.asynccontextmanager
async def clients(*ports: int) -> AsyncIterator[list[redis.Redis]]:
    made = [connect(p) for p in ports]
    try:
        yield made
    finally:
        for c in made:
            await c.aclose()


async def test_a_failover_that_loses_writes_never_moves_the_token_back(pair: Pair) -> None:
    m, r = pair.master.port, pair.replica.port
    async with clients(m, r, m, m, r, r) as (on_m, on_r, a_client, b_client, c_client, raw_r):
        await synced(on_m, raw_r)
        a = LeaderElector(a_client, "a", ttl_s=TTL_S, replicated=True)
        async with campaigning(a):
            await asyncio.wait_for(a.wait_elected(), 5.0)
        t1 = a.token
        assert t1 is not None
        assert await raw_r.get(keys.leader()) == f"a:{t1}".encode()  # acknowledged first
        await a.release()
        # The replica stops following: what the old master does from here on is lost.
        await raw_r.replicaof("NO", "ONE")
        b = LeaderElector(b_client, "b", ttl_s=TTL_S, replicated=True)
        b_store = RedisStore(b_client, replicated=True)
        async with campaigning(b):
            await asyncio.wait_for(b.wait_elected(), 5.0)
            t2 = b.token
            assert t2 is not None and t2 > t1
            assert await b_store.commit([replica(1)], expected_epoch=0, fence_token=t2)
            # The failover: b's clients now reach the promoted replica.
            await move(b_client, r)
            with pytest.raises(StaleLeaderError):  # t2 never reached it
                await b_store.commit([replica(2)], expected_epoch=0, fence_token=t2)
            await wait_until(lambda: not b.is_leader)  # its renewal there is refused
        # The promoted server's counter still holds t1, but t1 was minted on the old master.
        assert await raw_r.get(keys.fence()) == str(t1).encode()
        r_store = RedisStore(on_r, replicated=True)
        with pytest.raises(StaleLeaderError):
            await r_store.commit([replica(3)], expected_epoch=0, fence_token=t1)
        c = LeaderElector(c_client, "c", ttl_s=TTL_S, replicated=True)
        async with campaigning(c):
            await asyncio.wait_for(c.wait_elected(), 5.0)
            t3 = c.token
        assert t3 is not None and t3 > t2 and t3 >= t1 + FENCE_JUMP
        assert await r_store.commit([replica(4)], expected_epoch=0, fence_token=t3)
        for old in (t1, t2):
            with pytest.raises(StaleLeaderError):
                await r_store.restore(await r_store.membership(), fence_token=old)
        await c.release()


async def test_a_promoted_server_that_never_had_the_counter_mints_a_greater_token(
    pair: Pair,
) -> None:
    """A replica promoted before it ever received the counter (its first sync never finished)
    starts one of its own: the new token must still be greater than the old master's, which a
    counter started at a random number below 2**40 was not, half the time."""
    m, r = pair.master.port, pair.replica.port
    async with clients(m, r, m) as (on_m, raw_r, a_client):
        await on_m.set(keys.fence(), 1 << 41)  # a counter that has seen many terms
        await on_m.set(keys.fence_server(), "a server of long ago")
        a = LeaderElector(a_client, "a", ttl_s=TTL_S, replicated=True)
        async with campaigning(a):
            await asyncio.wait_for(a.wait_elected(), 5.0)
        t1 = a.token
        assert t1 is not None and t1 > 1 << 41
        await a.release()
        await raw_r.replicaof("NO", "ONE")
        await raw_r.flushall()  # as if its first sync had never completed
        await move(a_client, r)
        b = LeaderElector(a_client, "b", ttl_s=TTL_S, replicated=True)
        async with campaigning(b):
            await asyncio.wait_for(b.wait_elected(), 5.0)
            t2 = b.token
        assert t2 is not None and t2 > t1
        await b.release()


async def test_a_term_starts_only_once_a_replica_holds_its_lease(pair: Pair) -> None:
    async with clients(pair.master.port, pair.replica.port, pair.master.port) as (
        on_m,
        on_r,
        a_client,
    ):
        await synced(on_m, on_r)
        a = LeaderElector(a_client, "a", ttl_s=TTL_S, replicated=True)
        assert pair.replica.pid is not None
        os.kill(pair.replica.pid, signal.SIGSTOP)  # connected, but acknowledging nothing
        try:
            async with campaigning(a):
                await asyncio.sleep(4 * TTL_S)
                assert not a.is_leader and a.token is None
        finally:
            os.kill(pair.replica.pid, signal.SIGCONT)
        async with campaigning(a):
            await asyncio.wait_for(a.wait_elected(), 5.0)
            assert await on_r.get(keys.leader()) == f"a:{a.token}".encode()
        await a.release()


async def test_an_unreplicated_elector_leads_without_waiting_and_keeps_single_redis_tokens(
    pair: Pair,
) -> None:
    """The single-server path is unchanged: no WAIT, no binding, consecutive tokens."""
    async with clients(pair.master.port, pair.master.port) as (a_client, b_client):
        a = LeaderElector(a_client, "a", ttl_s=TTL_S)
        async with campaigning(a):
            await asyncio.wait_for(a.wait_elected(), 5.0)
        first = a.token
        await a.release()
        b = LeaderElector(b_client, "b", ttl_s=TTL_S)
        async with campaigning(b):
            await asyncio.wait_for(b.wait_elected(), 5.0)
        assert first is not None and b.token == first + 1
        assert await a_client.get(keys.fence_server()) is None
        await b.release()

"""A demoted master: its ``READONLY`` answers and dropped subscriptions are followed.

The Sentinel backend's clients (``master_client``) over a real master and replica, with the
Sentinels' answer as a seam: ``discover_master`` of a ``Sentinel`` object says which server is
the master, and the test changes its answer when it demotes the master itself (``REPLICAOF``),
without the Sentinels' reconfiguration that would also drop every client. What redis-py's
``SentinelManagedConnection`` does on ``READONLY`` (it drops the connection and raises a
connection error) plus the client's one retry must make a write on the demoted master land on
the new one without an error; the store's change listener must resubscribe there; the relay's
``BLPOP`` must take requests there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis
from redis.asyncio.sentinel import Sentinel

from balancer.state import keys
from balancer.state.coordination import AdminReply
from balancer.state.redis_relay import RedisRelay
from balancer.state.redis_store import RedisStore
from balancer.state.sentinel import master_client
from tests.state.conftest import replica
from tests.state.test_sentinel_fencing import Pair, pair, synced
from tests.support.redis_process import redis_binary

__all__ = ["pair"]  # the fixture, imported

pytestmark = pytest.mark.skipif(
    redis_binary() is None, reason="needs the redis-server binary (CI installs it)"
)


class Watcher:
    """A ``Sentinel`` whose answer the test sets (the port of the master)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sentinel = Sentinel([("127.0.0.1", 1)])  # type: ignore[no-untyped-call]

        async def discover_master(name: str) -> tuple[str, int]:
            return "127.0.0.1", self.port

        self.sentinel.discover_master = discover_master  # type: ignore[method-assign,assignment]

    def client(self, call_timeout_s: float = 2.0) -> redis.Redis:
        return master_client(self.sentinel, "chlb", call_timeout_s=call_timeout_s, timeout_s=2.0)


async def demote(pair: Pair, watcher: Watcher, *, rejoin: bool = True) -> None:
    """The replica becomes the master, and the Sentinels say so; the old master becomes its
    replica (``rejoin``), or stays a master no one should use (cut off, as in a partition)."""
    async with redis.Redis(port=pair.replica.port) as r, redis.Redis(port=pair.master.port) as m:
        await r.replicaof("NO", "ONE")
        watcher.port = pair.replica.port
        if not rejoin:
            return
        await m.replicaof("127.0.0.1", pair.replica.port)
        for _ in range(500):  # until the demoted one answers READONLY to writes
            if (await m.info("replication"))["role"] == "slave":
                return
            await asyncio.sleep(0.01)


@pytest.fixture
async def watched(pair: Pair) -> AsyncIterator[Watcher]:
    async with redis.Redis(port=pair.master.port) as m, redis.Redis(port=pair.replica.port) as r:
        await synced(m, r)
    yield Watcher(pair.master.port)


async def test_a_write_on_a_demoted_master_lands_on_the_new_one(
    pair: Pair, watched: Watcher
) -> None:
    store = RedisStore(watched.client(), replicated=True)
    try:
        await store.mark_alive("S1", 30.0)  # connected to the master
        await demote(pair, watched)
        await store.mark_alive("S2", 30.0)  # READONLY there: dropped, retried on the new one
        async with redis.Redis(port=pair.replica.port) as new:
            assert await new.exists(keys.alive("S2")) == 1
    finally:
        await store.close()


async def test_the_listener_resubscribes_on_the_new_master(pair: Pair, watched: Watcher) -> None:
    store = RedisStore(watched.client(), replicated=True)
    writer = RedisStore(watched.client())
    try:
        await writer.commit([replica(1)], expected_epoch=0)
        await store.wait_for_change(1, 0.05)  # subscribed on the old master
        await asyncio.sleep(0.2)
        await demote(pair, watched, rejoin=False)
        await asyncio.sleep(1.5)  # the listener asks where the master is every half second
        waiting = asyncio.create_task(store.wait_for_change(1, 10.0))
        await asyncio.sleep(0.1)
        # Published on the new master only: a subscription left on the old one hears nothing.
        assert await writer.commit([replica(2)], expected_epoch=1)
        await asyncio.wait_for(waiting, 1.0)
    finally:
        await store.close()
        await writer.close()


async def test_the_relay_takes_requests_on_the_new_master(pair: Pair, watched: Watcher) -> None:
    leader_client, follower_client = watched.client(3.0), watched.client(3.0)
    leader = RedisRelay(leader_client, pickup_timeout_s=5.0, answer_timeout_s=5.0)
    follower = RedisRelay(follower_client, pickup_timeout_s=5.0, answer_timeout_s=5.0)

    async def apply(op: str, args: dict[str, Any]) -> AdminReply:
        return AdminReply(200, op.encode())

    serving = asyncio.create_task(leader.serve(apply))
    try:
        assert await asyncio.wait_for(follower.forward("add", {}), 10.0) == AdminReply(200, b"add")
        await demote(pair, watched)  # the leader's BLPOP is on the old master
        assert await asyncio.wait_for(follower.forward("rm", {}), 10.0) == AdminReply(200, b"rm")
    finally:
        serving.cancel()
        await asyncio.wait({serving}, timeout=3.0)
        await leader_client.aclose()
        await follower_client.aclose()

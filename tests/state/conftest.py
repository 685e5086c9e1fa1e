"""Fixtures of the state contract suites: one shared state over every backend.

``state`` is parametrized over memory, fakeredis and a real redis-server (the session's, or
``LB_TEST_REDIS_URL``; skipped with a reason when neither exists). Each backend is made by its
factory (``memory_backend``, ``redis_backend``), and every ``state.backend()`` is another
instance's coordinated set over the same shared data (memory: there is one instance, so it is
the same set). ``outage`` is a fakeredis store with some state whose connection a test cuts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
import redis.asyncio as redis
from redis.exceptions import RedisError

from balancer.errors import StoreUnavailable
from balancer.runtimes.base import ReplicaHandle
from balancer.state.backends import StateBackend, memory_backend
from balancer.state.redis_backend import redis_backend
from balancer.state.redis_store import RedisStore, redis_client
from balancer.state.store import Membership, Replica, Store
from tests.support.ports import free_port
from tests.support.shared_redis import shared_redis

LEADER_TTL_S = 0.6
BACKENDS = ["memory", "fakeredis", "redis"]
SHARED = ["fakeredis", "redis"]  # what several instances share (fencing, elections, relays)


def replica(i: int, *, locator: str = "") -> Replica:
    return Replica(f"S{i}", i, f"127.0.0.1:{9000 + i}", 1, locator)


def handle(name: str, address: str, locator: str = "") -> ReplicaHandle:
    """A runtime record; the ``locator`` is the runtime's own (opaque to the store)."""
    return ReplicaHandle(name, name, address, locator)


@dataclass
class SharedState:
    """One shared state as every instance sees it, made by the backend's factory."""

    kind: str
    make: Callable[[str], StateBackend]
    server: fakeredis.FakeServer | None = None  # fakeredis: cut with ``connected = False``
    made: list[StateBackend] = field(default_factory=list)

    @property
    def shared(self) -> bool:
        return self.kind != "memory"

    def backend(self, instance_id: str = "i") -> StateBackend:
        """Another instance's store, leadership and relay (memory: the only instance's)."""
        if self.kind == "memory" and self.made:
            return self.made[0]
        self.made.append(self.make(instance_id))
        return self.made[-1]

    def store(self) -> Store:
        return self.backend().store


@pytest.fixture(params=BACKENDS)
async def state(
    request: pytest.FixtureRequest, redis_url: str | None
) -> AsyncIterator[SharedState]:
    kind: str = request.param
    if kind == "memory":
        made = SharedState(kind, lambda _id: memory_backend())
        yield made
        return
    async with shared_redis(kind, redis_url) as redis_:
        server = redis_.server

        def connect(timeout_s: float) -> redis.Redis:
            if server is not None:
                return fakeredis.aioredis.FakeRedis(server=server)
            assert redis_url is not None
            return redis_client(redis_url, timeout_s=timeout_s)

        def make(instance_id: str) -> StateBackend:
            return redis_backend(
                redis_url or "redis://fakeredis",
                instance_id=instance_id,
                leader_ttl_s=LEADER_TTL_S,
                timeout_s=2.0,
                answer_timeout_s=2.0,
                prefix=redis_.prefix,
                connect=connect,
            )

        made = SharedState(kind, make, server)
        try:
            yield made
        finally:
            if server is not None:
                server.connected = True
            for backend in made.made:
                await backend.aclose()


# Runs a test over the shared backends only (memory has one writer: no fencing, no election).
shared_only = pytest.mark.parametrize("state", SHARED, indirect=True)


# --- outages ----------------------------------------------------------------------------------

Call = Callable[[Any], Awaitable[object]]
OUTAGES = ["disconnected", "unreachable"]


@dataclass
class Outage:
    """A Redis store with some state in it, to be cut off from its server."""

    server: fakeredis.FakeServer
    store: RedisStore

    async def check(self, call: Call, how: str) -> None:
        """``call`` raises ``StoreUnavailable`` (caused by the Redis error) while Redis cannot be
        reached, and once it can again, the state is intact."""
        if how == "unreachable":  # a real client against a closed port
            store = RedisStore(redis_client(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5))
            try:
                await raises_unavailable(call(store))
            finally:
                await store.close()
            return
        self.server.connected = False
        await raises_unavailable(call(self.store))
        self.server.connected = True
        assert await self.store.membership() == Membership(1, (replica(1),), 1)
        assert [h.name for h in await self.store.handles()] == ["S1"]
        assert await self.store.alive() == {"S1"}
        assert set(await self.store.instances()) == {"i"}
        assert await self.store.events(5) == [{"epoch": 1}]


async def raises_unavailable(call: Awaitable[object]) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await asyncio.wait_for(call, 5.0)
    assert not isinstance(caught.value, RedisError)
    assert isinstance(caught.value.__cause__, RedisError | OSError)


@pytest.fixture
async def outage() -> AsyncIterator[Outage]:
    server = fakeredis.FakeServer()
    store = RedisStore(fakeredis.aioredis.FakeRedis(server=server), prefix="t:")
    # Some state to read back, so a method that answered from a cache would be caught.
    await store.commit([replica(1)], expected_epoch=0, target=1)
    await store.record_handle(handle("S1", "h:1", "1"))
    await store.announce("i", {"a": 1}, 30.0)
    await store.mark_alive("S1", 30.0)
    await store.record_event({"epoch": 1}, 10)
    yield Outage(server, store)
    server.connected = True
    await store.close()

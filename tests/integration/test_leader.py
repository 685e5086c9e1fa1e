"""Leader election over fakeredis and a real redis-server: one leader, fast takeover, tokens.

That a stale leader's writes are fenced (its token refused by the store) is a property of the
backend's set: ``tests/state/test_backends.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import fakeredis
import pytest
import redis.asyncio as redis

from balancer.state.redis_leadership import LeaderElector
from tests.support.shared_redis import shared_redis

TTL_S = 0.6
ClientFactory = Callable[[], redis.Redis]


@pytest.fixture(params=["fakeredis", "redis"])
async def make_client(
    request: pytest.FixtureRequest, redis_url: str | None
) -> AsyncIterator[tuple[ClientFactory, str, fakeredis.FakeServer | None]]:
    async with shared_redis(request.param, redis_url) as shared:
        yield shared.client, shared.prefix, shared.server


@contextlib.asynccontextmanager
async def campaigning(elector: LeaderElector) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(elector.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_leader(*electors: LeaderElector, timeout_s: float = 3.0) -> LeaderElector:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        leaders = [e for e in electors if e.is_leader]
        if leaders:
            assert len(leaders) == 1
            return leaders[0]
        await asyncio.sleep(0.01)
    pytest.fail("no leader elected")


async def test_single_instance_becomes_leader(make_client) -> None:  # type: ignore[no-untyped-def]
    factory, prefix, _ = make_client
    a = LeaderElector(factory(), "a", ttl_s=TTL_S, prefix=prefix)
    async with campaigning(a):
        assert await wait_leader(a) is a
        assert a.token is not None and a.token > 0


async def test_exactly_one_leader_at_a_time(make_client) -> None:  # type: ignore[no-untyped-def]
    factory, prefix, _ = make_client
    electors = [LeaderElector(factory(), f"i{i}", ttl_s=TTL_S, prefix=prefix) for i in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        for e in electors:
            await stack.enter_async_context(campaigning(e))
        await wait_leader(*electors)
        for _ in range(100):  # two lease lifetimes, sampled every 10 ms
            assert sum(e.is_leader for e in electors) == 1
            await asyncio.sleep(0.012)


async def test_follower_takes_over_when_the_leader_dies(make_client) -> None:  # type: ignore[no-untyped-def]
    factory, prefix, _ = make_client
    a = LeaderElector(factory(), "a", ttl_s=TTL_S, prefix=prefix)
    b = LeaderElector(factory(), "b", ttl_s=TTL_S, prefix=prefix)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(campaigning(a))
        assert await wait_leader(a) is a
        first_token = a.token
        b_task = await stack.enter_async_context(campaigning(b))
        await asyncio.sleep(TTL_S)  # b campaigns and loses while a renews
        assert not b.is_leader
        # a's campaign stops without releasing (a crash): b must wait out the lease, no longer.
        await stack.aclose()  # (cancels both; b restarts below)
        assert b_task.done()
    async with campaigning(b):
        died = time.monotonic()
        assert await wait_leader(b, timeout_s=3.0) is b
        took = time.monotonic() - died
    assert took < TTL_S + TTL_S / 3 + 0.3, f"takeover took {took:.2f}s"
    assert b.token is not None and first_token is not None and b.token == first_token + 1


async def test_release_hands_over_without_waiting_for_the_ttl(make_client) -> None:  # type: ignore[no-untyped-def]
    factory, prefix, _ = make_client
    a = LeaderElector(factory(), "a", ttl_s=5.0, prefix=prefix)
    b = LeaderElector(factory(), "b", ttl_s=5.0, prefix=prefix)
    async with campaigning(a):
        assert await wait_leader(a) is a
        async with campaigning(b):
            await a.release()
            released = time.monotonic()
            assert await wait_leader(b, timeout_s=4.0) is b
            assert time.monotonic() - released < 2.5  # one campaign interval, not the 5 s TTL
            assert not a.is_leader


async def test_tokens_do_not_restart_at_one_after_redis_lost_its_data(make_client) -> None:  # type: ignore[no-untyped-def]
    """A counter lost with Redis's data restarts at a random base, not at the old leader's token."""
    factory, prefix, _ = make_client
    tokens = set()
    for round_ in range(5):
        client = factory()
        a = LeaderElector(client, f"a{round_}", ttl_s=TTL_S, prefix=prefix)
        async with campaigning(a):
            await wait_leader(a)
            tokens.add(a.token)
        await client.delete(f"{prefix}leader", f"{prefix}fence")  # the data is lost
    assert len(tokens) == 5


@pytest.mark.parametrize("make_client", ["fakeredis"], indirect=True)  # outage: connected=False
async def test_leader_steps_down_when_redis_is_unreachable(make_client) -> None:  # type: ignore[no-untyped-def]
    factory, prefix, server = make_client
    assert server is not None
    a = LeaderElector(factory(), "a", ttl_s=TTL_S, prefix=prefix)
    async with campaigning(a):
        await wait_leader(a)
        server.connected = False
        cut = time.monotonic()
        for _ in range(200):
            if not a.is_leader:
                break
            await asyncio.sleep(0.01)
        assert time.monotonic() - cut <= TTL_S + 0.1  # never past the lease it last renewed
        server.connected = True
        assert await wait_leader(a, timeout_s=3.0) is a

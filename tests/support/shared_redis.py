"""Clients of one shared Redis for a test: fakeredis or the session's real redis-server.

Every client a test makes sees the same data (as balancer instances do), under a fresh key
prefix that is deleted afterwards. ``server`` is the FakeServer for fakeredis (a test can cut
the connection with ``server.connected = False``), None for the real server.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import fakeredis
import pytest
import redis.asyncio as redis

SKIP_REAL = "no redis-server binary and no LB_TEST_REDIS_URL (CI installs one)"


@dataclass
class SharedRedis:
    client: Callable[[], redis.Redis]  # another client of the same data on every call
    prefix: str
    server: fakeredis.FakeServer | None


@contextlib.asynccontextmanager
async def shared_redis(
    kind: str, redis_url: str | None, *, socket_timeout_s: float = 1.0
) -> AsyncIterator[SharedRedis]:
    """``kind`` is "fakeredis" or "redis" (skips when the session has no real server)."""
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    clients: list[redis.Redis] = []
    server: fakeredis.FakeServer | None = None
    if kind == "fakeredis":
        fake = server = fakeredis.FakeServer()

        def make() -> redis.Redis:
            return fakeredis.aioredis.FakeRedis(server=fake)
    else:
        if redis_url is None:
            pytest.skip(SKIP_REAL)
        url = redis_url

        def make() -> redis.Redis:
            return redis.Redis.from_url(
                url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
            )

    def client() -> redis.Redis:
        clients.append(make())
        return clients[-1]

    try:
        yield SharedRedis(client, prefix, server)
    finally:
        if server is not None:
            server.connected = True
        cleanup = make()
        with contextlib.suppress(redis.RedisError, OSError):
            async for key in cleanup.scan_iter(match=f"{prefix}*"):
                await cleanup.delete(key)
        await cleanup.aclose()
        for c in clients:
            await c.aclose()

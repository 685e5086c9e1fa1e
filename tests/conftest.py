"""Shared fixtures: a balancer app on an ephemeral port over in-process replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient

from balancer.app import create_app
from balancer.config import Settings
from balancer.store import InMemoryStore
from tests.support.runtime import InProcessRuntime

# Fast heartbeats so failure tests finish quickly; the production defaults are in Settings.
FAST = {"heartbeat_interval_s": 0.1, "heartbeat_timeout_s": 0.1, "heartbeat_fails": 2}


@dataclass
class Balancer:
    client: TestClient  # type: ignore[type-arg]
    store: InMemoryStore
    runtime: InProcessRuntime
    settings: Settings

    async def names(self) -> list[str]:
        return (await self.store.membership()).names


BalancerFactory = Callable[..., Awaitable[Balancer]]


@pytest.fixture
async def make_balancer(aiohttp_client) -> AsyncIterator[BalancerFactory]:  # type: ignore[no-untyped-def]
    async def make(runtime: InProcessRuntime | None = None, **overrides: object) -> Balancer:
        settings = Settings(**{"port": 0, **FAST, **overrides})  # type: ignore[arg-type]
        store = InMemoryStore()
        runtime = runtime or InProcessRuntime()
        app = create_app(settings, store=store, runtime=runtime)
        client = await aiohttp_client(app)
        return Balancer(client, store, runtime, settings)

    yield make


@pytest.fixture
async def lb(make_balancer: BalancerFactory) -> Balancer:
    return await make_balancer()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0, every_s: float = 0.02
) -> float:
    """Poll ``check`` until true; return the seconds it took. Fails the test on timeout."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"condition not met within {timeout_s}s")
        await asyncio.sleep(every_s)
    return time.monotonic() - started

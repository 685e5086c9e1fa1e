"""Shared fixtures: a whole balancer (data path + admin) on an ephemeral port over in-process
replicas. And one rule for CI: with ``CHLB_REQUIRE_DOCKER=1`` (``.ci/run`` sets it once the
daemon and the images are ready) a test marked ``docker`` that skips fails instead, so a
setup that broke cannot turn the Docker and Swarm suites into a green run of skips."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
import uvloop

from balancer.app import BalancerService
from balancer.config import Settings
from balancer.state.memory import InMemoryStore
from tests.support.redis_server import redis_server
from tests.support.runtime import InProcessRuntime

# Fast heartbeats so failure tests finish quickly; the production defaults are in Settings.
FAST = {"heartbeat_interval_s": 0.1, "heartbeat_timeout_s": 0.1, "heartbeat_fails": 2}


@dataclass
class Balancer:
    client: aiohttp.ClientSession  # base_url = the balancer
    service: BalancerService
    store: InMemoryStore
    runtime: InProcessRuntime
    settings: Settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    async def names(self) -> list[str]:
        return (await self.store.membership()).names


BalancerFactory = Callable[..., Awaitable[Balancer]]


def pytest_asyncio_loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on uvloop, the loop the balancer runs on in production."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def make_balancer() -> AsyncIterator[BalancerFactory]:
    made: list[Balancer] = []

    async def make(runtime: InProcessRuntime | None = None, **overrides: object) -> Balancer:
        settings = Settings.from_flat(**{"port": 0, **FAST, **overrides})
        store = InMemoryStore()
        runtime = runtime or InProcessRuntime()
        service = BalancerService(settings, store=store, runtime=runtime)
        await service.start()
        client = aiohttp.ClientSession(f"http://127.0.0.1:{service.port}")
        lb = Balancer(client, service, store, runtime, settings)
        made.append(lb)
        return lb

    yield make
    for lb in made:
        await lb.client.close()
        await lb.service.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str | None]:
    """A real redis-server for the session (started here if the binary exists), or None."""
    with redis_server() as url:
        yield url


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skipped ``docker`` test fails where CI says Docker is there (see the docstring)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if (
        report.skipped
        and os.environ.get("CHLB_REQUIRE_DOCKER") == "1"
        and item.get_closest_marker("docker") is not None
    ):
        report.outcome = "failed"
        report.longrepr = f"CHLB_REQUIRE_DOCKER=1, but this Docker test skipped: {report.longrepr}"

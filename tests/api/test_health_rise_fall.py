"""Active health checks with HAProxy's rise/fall: DOWN after ``fall`` failed probes, UP again
only after ``rise`` passed ones, probes spaced by a jittered interval."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from balancer.hashing import RingSettings
from balancer.health import HealthMonitor
from balancer.membership import RingView
from balancer.store import InMemoryStore, Replica


class Flaky:
    """A replica whose ``/heartbeat`` passes or fails on demand."""

    def __init__(self) -> None:
        self.healthy = True

    async def heartbeat(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 500)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[Flaky, str]]:
    replica = Flaky()
    app = web.Application()
    app.router.add_get("/heartbeat", replica.heartbeat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield replica, f"127.0.0.1:{server.port}"
    await server.close()


async def test_fall_then_rise(flaky: tuple[Flaky, str]) -> None:
    replica, address = flaky
    store = InMemoryStore()
    await store.commit([Replica("r", 1, address)], expected_epoch=0, target=1)
    view = RingView(store, RingSettings())
    await view.refresh()
    events: list[str] = []

    async def on_dead(name: str) -> None:
        events.append(f"dead {name}")

    async def on_up(name: str) -> None:
        events.append(f"up {name}")

    async with aiohttp.ClientSession() as session:
        monitor = HealthMonitor(
            store,
            view,
            session,
            on_dead,
            interval_s=0.1,
            timeout_s=0.5,
            fails=2,
            rise=3,
            on_up=on_up,
        )
        await monitor.check_once()
        assert await store.alive() == {"r"} and events == []
        replica.healthy = False
        await monitor.check_once()  # 1 of fall=2: still UP
        assert await store.alive() == {"r"} and events == []
        await monitor.check_once()  # 2 of 2: DOWN
        assert await store.alive() == frozenset() and events == ["dead r"]
        assert monitor.alive("r") is False
        replica.healthy = True
        for _ in range(2):  # 2 of rise=3: still DOWN
            await monitor.check_once()
            assert await store.alive() == frozenset() and events == ["dead r"]
        replica.healthy = False  # a failure resets the rise count
        await monitor.check_once()
        replica.healthy = True
        for _ in range(2):
            await monitor.check_once()
        assert events == ["dead r"]  # one failure while DOWN is below fall: nothing new
        await monitor.check_once()  # 3 in a row: UP
        assert events[-1] == "up r" and await store.alive() == {"r"}
        assert monitor.alive("r") is True


def test_probe_intervals_are_jittered_within_bounds() -> None:
    monitor = HealthMonitor(
        InMemoryStore(),
        None,
        None,
        None,  # type: ignore[arg-type]
        interval_s=1.0,
        timeout_s=0.5,
        fails=2,
        jitter=0.2,
        rng=random.Random(3),
    )
    gaps = [monitor.next_interval_s() for _ in range(1000)]
    assert 0.8 <= min(gaps) < 0.85 and 1.15 < max(gaps) <= 1.2
    assert len({round(g, 6) for g in gaps}) > 900
    steady = HealthMonitor(
        InMemoryStore(),
        None,
        None,
        None,  # type: ignore[arg-type]
        interval_s=1.0,
        timeout_s=0.5,
        fails=2,
    )
    assert {steady.next_interval_s() for _ in range(10)} == {1.0}

"""Active health checks with HAProxy's rise/fall: DOWN after ``fall`` failed probes, UP again
only after ``rise`` passed ones, probes spaced by a jittered interval; the check's path and the
statuses that pass it are configurable (``health_path``, ``health_status``)."""

from __future__ import annotations

import os
import random
import resource
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from balancer.control.health import HealthCheck, HealthMonitor, health_check, probe
from balancer.hashing import RingSettings
from balancer.sections import HealthSettings
from balancer.state.memory import InMemoryStore
from balancer.state.store import Replica
from balancer.state.view import RingView
from tests.conftest import BalancerFactory, eventually
from tests.http.test_error_answers import answering_balancer


class Flaky:
    """A replica whose ``/heartbeat`` passes or fails on demand; ``/ready`` answers ``ready``
    (``?status=`` overrides it), ``/moved`` redirects to ``/heartbeat``."""

    def __init__(self) -> None:
        self.healthy = True
        self.ready = 200

    async def heartbeat(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 500)

    async def ready_check(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.query.get("status", self.ready)))

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/heartbeat")


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[Flaky, str]]:
    replica = Flaky()
    app = web.Application()
    app.router.add_get("/heartbeat", replica.heartbeat)
    app.router.add_get("/ready", replica.ready_check)
    app.router.add_get("/moved", replica.moved)
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

    def on_change() -> None:  # the reconciler's wake-up: it reads down_since
        events.append("dead r" if "r" in monitor.down_since else "up r")

    async with aiohttp.ClientSession() as session:
        monitor = HealthMonitor(
            store,
            view,
            session,
            HealthSettings(interval_s=0.1, timeout_s=0.5, fails=2, rise=3, jitter=0.0),
            on_change=on_change,
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
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        HealthSettings(interval_s=1.0, timeout_s=0.5, fails=2, rise=1, jitter=0.2),
        rng=random.Random(3),
    )
    gaps = [monitor.next_interval_s() for _ in range(1000)]
    assert 0.8 <= min(gaps) < 0.85 and 1.15 < max(gaps) <= 1.2
    assert len({round(g, 6) for g in gaps}) > 900
    steady = HealthMonitor(
        InMemoryStore(),
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        HealthSettings(interval_s=1.0, timeout_s=0.5, fails=2, rise=1, jitter=0.0),
    )
    assert {steady.next_interval_s() for _ in range(10)} == {1.0}


async def _monitor_of_one(
    address: str, session: aiohttp.ClientSession, check: HealthCheck, events: list[str]
) -> tuple[HealthMonitor, InMemoryStore]:
    store = InMemoryStore()
    await store.commit([Replica("r", 1, address)], expected_epoch=0, target=1)
    view = RingView(store, RingSettings())
    await view.refresh()

    def on_change() -> None:
        events.append("dead r" if "r" in monitor.down_since else "up r")

    monitor = HealthMonitor(
        store,
        view,
        session,
        HealthSettings(interval_s=0.1, timeout_s=0.5, fails=2, rise=1, jitter=0.0),
        check=check,
        on_change=on_change,
    )
    return monitor, store


async def test_a_failing_check_path_marks_the_replica_down(flaky: tuple[Flaky, str]) -> None:
    replica, address = flaky
    replica.ready = 500  # /heartbeat still passes
    events: list[str] = []
    async with aiohttp.ClientSession() as session:
        check = HealthCheck("/ready", frozenset({200}))
        monitor, store = await _monitor_of_one(address, session, check, events)
        for _ in range(2):
            await monitor.check_once()
        assert events == ["dead r"] and monitor.alive("r") is None
        assert await store.alive() == frozenset()
        assert await probe(session, address, 0.5)  # the default check, /heartbeat, passes


@pytest.mark.parametrize(
    ("path", "statuses", "passes"),
    [
        ("/ready", "200", True),
        ("/ready?status=204", "200", False),
        ("/ready?status=204", "200-299", True),
        ("/moved", "200", False),  # a redirect is not followed: its status is the answer
        ("/moved", "200-399", True),
        ("/ready?status=503", "200-399,503", True),
        ("/nowhere", "200-399", False),
    ],
)
async def test_the_check_path_and_its_passing_statuses(
    flaky: tuple[Flaky, str], path: str, statuses: str, passes: bool
) -> None:
    _, address = flaky
    check = health_check(HealthSettings(path=path, status=statuses))
    async with aiohttp.ClientSession() as session:
        assert await probe(session, address, 0.5, check) is passes


async def test_health_path_takes_a_replica_failing_it_out(make_balancer: BalancerFactory) -> None:
    """End to end: every replica answers /heartbeat, but the balancer probes /ready, which the
    victim fails (500, as it does every request): it goes DOWN and is replaced."""
    lb, handler, ids = await answering_balancer(make_balancer, health_path="/ready")
    victim = "Server 2"
    handler.status[ids[victim]] = 500

    async def replaced() -> bool:
        return victim not in await lb.names() and len(await lb.names()) == 3

    await eventually(replaced, timeout_s=5.0)
    assert handler.seen[ids[victim]] > 0  # its /ready was probed


_HEARTBEAT_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args): pass
server = http.server.HTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def replica_process() -> Iterator[str]:
    """A replica in its own process: the balancer's descriptor limit is not its own."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HEARTBEAT_SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        yield f"127.0.0.1:{int(proc.stdout.readline())}"
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_a_balancer_out_of_descriptors_concludes_nothing(replica_process: str) -> None:
    """Issue 14: 1,100 stuck clients exhausted the descriptors, every probe failed, and a
    healthy replica was evicted 69 times. A probe the balancer cannot even open is no evidence:
    the replica stays UP and keeps its liveness."""
    address = replica_process
    store = InMemoryStore()
    await store.commit([Replica("r", 1, address)], expected_epoch=0, target=1)
    view = RingView(store, RingSettings())
    await view.refresh()
    changes: list[str] = []

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        monitor = HealthMonitor(
            store,
            view,
            session,
            HealthSettings(interval_s=0.1, timeout_s=0.5, fails=1, rise=1, jitter=0.0),
            on_change=lambda: changes.append("changed"),
        )
        await monitor.check_once()
        assert await store.alive() == {"r"}
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowest_free = os.open(os.devnull, os.O_RDONLY)  # the next descriptor a socket would get
        os.close(lowest_free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no new descriptor
        try:
            assert await probe(session, address, 0.5) is None
            for _ in range(3):
                await monitor.check_once()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert changes == [] and monitor.down_since == {} and monitor.alive("r") is True
        assert await store.alive() == {"r"}
        await monitor.check_once()  # descriptors back: probes work again
        assert monitor.alive("r") is True

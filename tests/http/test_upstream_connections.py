"""Upstream connection life: replicas that close keep-alive connections, clients that vanish
mid-response, and retries when a replica's socket disappears."""

from __future__ import annotations

import asyncio
import hashlib
import os

from aiohttp import web

from tests.conftest import Balancer, BalancerFactory, eventually
from tests.http.conftest import frontend, keys_by_owner, owner, raw_balancer
from tests.http.replicas import SLOW_OUTCOMES, echo_app, ok, requests
from tests.http.wire import Client, request_bytes
from tests.support.runtime import InProcessRuntime


async def _close_after_each(
    server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    async for req in requests(r, w):
        w.write(ok(req.target + b" " + req.body))  # no Connection: close, then close anyway
        return


async def _close_when_idle(
    server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    incoming = requests(r, w)
    while True:
        try:
            async with asyncio.timeout(0.02):  # a 20 ms keep-alive timeout
                req = await anext(incoming)
        except (TimeoutError, StopAsyncIteration):
            return
        w.write(ok(req.target + b" " + req.body))


class _OneRequestPerConnection:
    """Answers the first request of a connection; closes, unanswered, on the second one:
    the race of a keep-alive timeout firing just as the balancer reuses the connection."""

    def __init__(self) -> None:
        self.dropped = 0

    async def __call__(
        self, server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        answered = False
        async for req in requests(r, w):
            if answered:
                self.dropped += 1
                return
            w.write(ok(req.target + b" " + req.body))
            answered = True


async def _run_sequence(lb: Balancer, count: int, pause_s: float = 0.0) -> None:
    async with await Client.open(lb.service.port) as c:
        for i in range(count):
            body = os.urandom(1000) if i % 3 == 0 else b""
            method = "POST" if body else "GET"
            resp = await c.request(method, f"/seq?id={i}", body=body)
            assert resp.status == 200, resp.body
            assert resp.body == f"/seq?id={i} ".encode() + body
            if pause_s:
                await asyncio.sleep(pause_s)


async def test_replica_closing_after_every_response(make_balancer: BalancerFactory) -> None:
    lb, _ = await raw_balancer(make_balancer, _close_after_each)
    await _run_sequence(lb, 30)


async def test_replica_closing_idle_connections(make_balancer: BalancerFactory) -> None:
    lb, _ = await raw_balancer(make_balancer, _close_when_idle)
    await _run_sequence(lb, 8, pause_s=0.05)  # every pooled connection is closed meanwhile
    await _run_sequence(lb, 8)


async def test_stale_pooled_connection_retried_on_a_fresh_socket(
    make_balancer: BalancerFactory,
) -> None:
    replica = _OneRequestPerConnection()
    lb, _ = await raw_balancer(make_balancer, replica)
    await _run_sequence(lb, 20)
    assert replica.dropped > 0  # the stale-connection path was really taken
    assert lb.service.stats.replica("Server 1").errors["reset"] == replica.dropped


async def test_client_vanishing_mid_response_leaves_the_balancer_healthy(
    make_balancer: BalancerFactory,
) -> None:
    outcomes: list[str] = []  # how the replica's /slow-big handler ended

    def app_factory(server_id: str) -> web.Application:
        app = echo_app(server_id)
        app[SLOW_OUTCOMES] = outcomes
        return app

    lb = await make_balancer(InProcessRuntime(app_factory), replicas=1)
    c = await Client.open(lb.service.port)
    await c.send(request_bytes("GET", "/slow-big?id=1"))
    async with asyncio.timeout(5.0):
        await c.reader.readuntil(b"\r\n\r\n")
        got = 0
        while got < 512 * 1024:
            got += len(await c.reader.read(65536))
    c.abort()  # RST in the middle of a ~125 MiB answer
    await c.close()

    async def upstream_released() -> bool:
        stats = lb.service.stats.replica("Server 1")
        return bool(outcomes) and stats.in_flight == 0 and not frontend(lb).connections

    await eventually(upstream_released, timeout_s=5.0)
    assert outcomes != ["completed"]  # the balancer dropped the upstream side too
    async with await Client.open(lb.service.port) as c2:
        for i in range(5):
            payload = os.urandom(100)
            resp = await c2.request("POST", f"/echo?id={i}", body=payload)
            assert resp.json()["body_sha256"] == hashlib.sha256(payload).hexdigest()


async def test_crashed_replica_requests_retried_elsewhere(make_balancer: BalancerFactory) -> None:
    # Heartbeats far apart: the crash is not detected during the test, so only retries help.
    lb = await make_balancer(heartbeat_interval_s=30.0, heartbeat_timeout_s=1.0)
    # Warm the pools: every replica has idle keep-alive connections when the victim goes.
    warm = keys_by_owner(lb, "warm", per_owner=3)
    async with await Client.open(lb.service.port) as c:
        for key in [k for keys in warm.values() for k in keys]:
            assert (await c.request("GET", f"/home?id={key}")).status == 200
    victim = "Server 2"
    await lb.runtime.crash(victim)
    keys = [str(k) for k in range(500_000, 500_100)]
    assert sum(owner(lb, k) == victim for k in keys) > 10  # the victim owned a good share

    async def batch(part: list[str]) -> list[int]:
        async with await Client.open(lb.service.port) as c:
            await c.send(b"".join(request_bytes("GET", f"/home?id={k}") for k in part))
            return [(await c.response()).status for _ in part]

    statuses = await asyncio.gather(*(batch(keys[i : i + 10]) for i in range(0, 100, 10)))
    assert [s for part in statuses for s in part] == [200] * 100
    assert victim in await lb.names()  # still a member: nothing but retries saved them
    assert lb.service.stats.replica(victim).errors["connect"] > 0

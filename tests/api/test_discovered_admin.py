"""``/add`` and ``/rm`` when another system runs the replicas (``--runtime dns``).

A whole balancer over ``DnsRuntime`` (a lookup the test answers) and replica apps in the test's
loop: the ring is what DNS lists; ``/add`` and ``/rm`` answer 409 in the contract's error shape
naming the DNS name, change nothing, on the leader, on a follower (before anything is handed
over) and for a change a follower handed over to the leader. ``PUT /lb/weight`` still applies (a
weight stays with its member while its address stays in the answer).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from balancer.api.admin import AdminApi
from balancer.config import Settings
from balancer.http.stats import TrafficStats
from balancer.runtimes.dns import DnsRuntime, replica_name
from balancer.state.coordination import AdminReply
from balancer.state.memory import InMemoryStore
from balancer.state.view import RingView
from tests.conftest import BalancerFactory, eventually
from tests.support.dns_fake import FakeDns, serve_replicas
from tests.support.runtime import ReplicaHost

REFUSAL = {
    "message": "<Error> Replicas are discovered from DNS name tasks.web; add or remove them "
    "there (this balancer follows what it lists)",
    "status": "failure",
}
CHANGES = [
    ("POST", "/add", {"n": 1, "hostnames": ["S9"]}),
    ("POST", "/add", {"n": 2}),
    ("DELETE", "/rm", {"n": 1}),
    ("POST", "/rm", {"n": 1, "hostnames": ["x"]}),
]


async def test_add_and_rm_answer_409_naming_the_dns_name(make_balancer: BalancerFactory) -> None:
    host = ReplicaHost()
    try:
        served = await serve_replicas(host, "A", "B")
        dns = FakeDns([address for address, _ in served.values()])
        runtime = DnsRuntime("tasks.web", dns.lookup, interval_s=0.05)
        lb = await make_balancer(runtime, heartbeat_interval_s=0.2, heartbeat_timeout_s=1.0)
        want = sorted(replica_name(a) for a, _ in served.values())

        async def joined() -> bool:
            return sorted(await lb.names()) == want

        await eventually(joined, timeout_s=5.0)
        before = await (await lb.client.get("/rep")).read()
        for method, path, body in CHANGES:
            async with lb.client.request(method, path, json=body) as resp:
                assert resp.status == 409, (method, path)
                assert json.loads(await resp.read()) == REFUSAL
        assert await (await lb.client.get("/rep")).read() == before
        first = want[0]
        async with lb.client.put("/lb/weight", json={"hostname": first, "weight": 0}) as resp:
            assert resp.status == 200
        assert (await lb.store.membership()).get(first).weight == 0  # type: ignore[union-attr]
    finally:
        await host.close()


class _Follower:
    is_leader = False
    token = None


class _RecordingRelay:
    def __init__(self) -> None:
        self.forwarded: list[tuple[str, dict[str, Any]]] = []

    async def forward(self, op: str, args: dict[str, Any]) -> AdminReply:
        self.forwarded.append((op, args))
        return AdminReply(200, b"{}")

    async def serve(self, handle: Any) -> None:
        raise AssertionError("a follower does not serve the relay")


def _admin(leadership: Any, relay: _RecordingRelay) -> AdminApi:
    store = InMemoryStore()
    return AdminApi(
        None,  # type: ignore[arg-type]  # it must refuse before any change is applied
        store,
        RingView(store, Settings().ring),
        DnsRuntime("tasks.web", FakeDns().lookup),
        TrafficStats(),
        leadership=leadership,
        relay=relay,
    )


async def test_a_follower_refuses_without_handing_the_change_over() -> None:
    relay = _RecordingRelay()
    admin = _admin(_Follower(), relay)
    app = web.Application(middlewares=[admin.middleware])
    app.router.add_routes(admin.routes())
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as client:
        for method, path, body in CHANGES:
            async with client.request(method, str(server.make_url(path)), json=body) as resp:
                assert resp.status == 409
                assert json.loads(await resp.read()) == REFUSAL
    assert relay.forwarded == []


async def test_a_handed_over_change_is_refused_by_the_leader() -> None:
    class Leader:
        is_leader = True
        token = 1

    admin = _admin(Leader(), _RecordingRelay())
    for op in ("add", "rm"):
        reply = await admin.apply(op, {"n": 1, "hostnames": []})
        assert (reply.status, json.loads(reply.body)) == (409, REFUSAL)


async def test_the_last_instance_out_leaves_discovered_members_and_their_weights() -> None:
    """The last instance of a shared deployment stops its replicas and empties the ring, so the
    next start boots afresh; with ``--runtime dns`` it starts and stops nothing, and emptying
    the ring would only lose the weights (drains) and ring settings operators set."""
    from balancer.app import BalancerService

    host = ReplicaHost()
    store = InMemoryStore()
    try:
        served = await serve_replicas(host, "A", "B")
        dns = FakeDns([address for address, _ in served.values()])
        runtime = DnsRuntime("tasks.web", dns.lookup, interval_s=0.05)
        settings = Settings.from_flat(port=0, heartbeat_interval_s=0.2, heartbeat_timeout_s=1.0)
        service = BalancerService(settings, store=store, runtime=runtime, shared=True)
        await service.start()
        try:
            want = sorted(replica_name(a) for a, _ in served.values())

            async def joined() -> bool:
                return sorted((await store.membership()).names) == want

            await eventually(joined, timeout_s=5.0)
            await service.manager.set_weight(want[0], 0)
        finally:
            await service.stop()
        after = await store.membership()
        assert sorted(after.names) == want
        assert after.get(want[0]).weight == 0  # type: ignore[union-attr]
    finally:
        await host.close()

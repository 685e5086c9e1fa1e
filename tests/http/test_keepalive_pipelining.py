"""Persistent client connections: sequential keep-alive requests and pipelining."""

from __future__ import annotations

import hashlib
import os

from tests.conftest import Balancer
from tests.http.conftest import frontend, keys_by_owner, owner, server_ids
from tests.http.wire import Client, request_bytes


async def test_keep_alive_many_requests_on_one_connection(echo_lb: Balancer) -> None:
    lb = echo_lb
    async with await Client.open(lb.service.port) as c:
        for i in range(12):
            method = ("GET", "POST", "PUT", "DELETE")[i % 4]
            body = f"body number {i}".encode() if method in ("POST", "PUT") else None
            resp = await c.request(method, f"/echo?id=ka-{i}", body=body)
            assert resp.status == 200
            seen = resp.json()
            assert (seen["method"], seen["path_qs"]) == (method, f"/echo?id=ka-{i}")
            assert seen["body"] == (body or b"").decode()
            assert resp.get("X-Replica") == seen["id"]
        assert len(frontend(lb).connections) == 1  # one client connection carried all of them


async def test_upstream_connection_is_reused_for_sequential_requests(echo_lb: Balancer) -> None:
    lb = echo_lb
    async with await Client.open(lb.service.port) as c:
        ports = set()
        for _ in range(8):
            resp = await c.request("GET", "/echo?id=same-key&port")
            assert resp.status == 200
            ports.add(resp.json()["upstream_port"])
    assert len(ports) == 1, f"pooled keep-alive connection not reused: {ports}"


async def test_five_pipelined_requests_answered_in_order(echo_lb: Balancer) -> None:
    lb = echo_lb
    ids = await server_ids(lb)
    by_owner = keys_by_owner(lb, "pipe", per_owner=2)
    keys = [k for bucket in zip(*by_owner.values(), strict=True) for k in bucket][:5]
    assert len({owner(lb, k) for k in keys}) == 3  # spread over every replica
    # The first request is the slowest: answers must still come back in request order.
    delays = [0.15, 0.1, 0.05, 0.0, 0.0]
    wire = b"".join(
        request_bytes(
            "POST" if i == 2 else "GET",
            f"/echo?id={k}&delay={d}",
            body=b"pipelined body" if i == 2 else None,
        )
        for i, (k, d) in enumerate(zip(keys, delays, strict=True))
    )
    async with await Client.open(lb.service.port) as c:
        await c.send(wire)  # all five in one write
        answers = [(await c.response()).json() for _ in keys]
        # The connection is still good afterwards.
        assert (await c.request("GET", "/echo?id=after")).status == 200
    assert [a["path_qs"] for a in answers] == [
        f"/echo?id={k}&delay={d}" for k, d in zip(keys, delays, strict=True)
    ]
    assert [a["id"] for a in answers] == [ids[owner(lb, k)] for k in keys]
    assert answers[2]["method"] == "POST" and answers[2]["body"] == "pipelined body"


async def test_pipelined_large_bodies_are_not_mixed_up(echo_lb: Balancer) -> None:
    # Bodies above the 64 KiB buffering threshold while the requests wait in the queue.
    bodies = [os.urandom(200_000) for _ in range(3)]
    wire = b"".join(
        request_bytes("POST", f"/echo?id=big-{i}", body=b) for i, b in enumerate(bodies)
    )
    async with await Client.open(echo_lb.service.port) as c:
        await c.send(wire)
        answers = [(await c.response()).json() for _ in bodies]
    assert [a["body_sha256"] for a in answers] == [hashlib.sha256(b).hexdigest() for b in bodies]
    assert [a["path_qs"] for a in answers] == [f"/echo?id=big-{i}" for i in range(3)]


async def test_pipelined_404_in_the_middle_keeps_the_order(echo_lb: Balancer) -> None:
    wire = (
        request_bytes("GET", "/echo?id=a")
        + request_bytes("GET", "/nowhere?id=b")
        + request_bytes("GET", "/echo?id=c")
    )
    async with await Client.open(echo_lb.service.port) as c:
        await c.send(wire)
        first, second, third = [await c.response() for _ in range(3)]
    assert first.json()["path_qs"] == "/echo?id=a"
    assert second.status == 400
    assert second.json()["message"] == (
        "<Error> '/nowhere' endpoint does not exist in server replicas"
    )
    assert third.json()["path_qs"] == "/echo?id=c"

"""What the replica receives: hop-by-hop fields removed, X-Forwarded-For, Host and the request
target untouched; and hop-by-hop fields removed from responses."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import BalancerFactory
from tests.http.conftest import raw_balancer
from tests.http.replicas import recorder, requests
from tests.http.wire import Client, Request, request_bytes

REQUEST_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
}


async def _send_recorded(
    make_balancer: BalancerFactory, raw: bytes, count: int = 1
) -> list[Request]:
    handler, seen = recorder()
    lb, _ = await raw_balancer(make_balancer, handler)
    async with await Client.open(lb.service.port) as c:
        await c.send(raw)
        for _ in range(count):
            assert (await c.response()).status == 200
    assert len(seen) == count
    return seen


async def test_hop_by_hop_request_fields_not_forwarded(make_balancer: BalancerFactory) -> None:
    raw = request_bytes(
        "GET",
        "/hop?id=1",
        headers=[
            ("Connection", "keep-alive, X-Secret, x-other"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic eA=="),
            ("Proxy-Connection", "keep-alive"),
            ("X-Secret", "named in Connection"),
            ("X-Other", "named in Connection too"),
            ("X-Keep", "end-to-end"),
            ("X-Request-ID", "rid-7"),
        ],
    )
    (req,) = await _send_recorded(make_balancer, raw)
    names = req.names()
    assert not names & REQUEST_HOP_BY_HOP, names & REQUEST_HOP_BY_HOP
    assert "x-secret" not in names and "x-other" not in names
    assert req.get("X-Keep") == "end-to-end"
    assert req.get("X-Request-ID") == "rid-7"  # a routing-key header is still forwarded
    assert req.version == b"HTTP/1.1"


async def test_x_forwarded_for_added(make_balancer: BalancerFactory) -> None:
    (req,) = await _send_recorded(make_balancer, request_bytes("GET", "/xff?id=1"))
    assert req.all("X-Forwarded-For") == ["127.0.0.1"]


async def test_x_forwarded_for_appended(make_balancer: BalancerFactory) -> None:
    raw = request_bytes("GET", "/xff?id=1", headers=[("X-Forwarded-For", "203.0.113.9, 10.0.0.1")])
    (req,) = await _send_recorded(make_balancer, raw)
    assert req.all("X-Forwarded-For") == ["203.0.113.9, 10.0.0.1, 127.0.0.1"]


async def test_repeated_x_forwarded_for_lines_all_kept(make_balancer: BalancerFactory) -> None:
    raw = request_bytes(
        "GET",
        "/xff?id=1",
        headers=[("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "10.0.0.1")],
    )
    (req,) = await _send_recorded(make_balancer, raw)
    assert ", ".join(req.all("X-Forwarded-For")) == "203.0.113.9, 10.0.0.1, 127.0.0.1"


async def test_fields_named_in_any_connection_line_removed(make_balancer: BalancerFactory) -> None:
    raw = request_bytes(
        "GET",
        "/conn?id=1",
        headers=[("Connection", "X-Secret"), ("Connection", "keep-alive"), ("X-Secret", "s")],
    )
    (req,) = await _send_recorded(make_balancer, raw)
    assert "x-secret" not in req.names()


async def test_host_preserved(make_balancer: BalancerFactory) -> None:
    raw = request_bytes("GET", "/host?id=1", host="Example.TEST:8080")
    (req,) = await _send_recorded(make_balancer, raw)
    assert req.all("Host") == ["Example.TEST:8080"]


TARGETS = [
    b"/q?id=1",
    b"/q?x=%41%2f+y&y=a%20b&empty=&&flag&id=2",
    b"/a/b/../c/./d?z=~!$'()*,;:@/?&id=3",
    b"/path%20with%20spaces/%E2%9C%93?k=%E2%9C%93&id=%34",
    b"/q?dup=1&dup=2&ID=x&id=5&id=6",
    b"/?id=7",
    b"/long?" + b"&".join(b"k%d=%s" % (i, b"v" * 50) for i in range(100)),
]


@pytest.mark.parametrize("target", TARGETS, ids=range(len(TARGETS)))
async def test_request_target_byte_identical(make_balancer: BalancerFactory, target: bytes) -> None:
    (req,) = await _send_recorded(make_balancer, request_bytes("GET", target))
    assert req.target == target


async def test_request_head_forwarded_byte_for_byte_apart_from_xff(
    make_balancer: BalancerFactory,
) -> None:
    head = (
        b"PATCH /exact?id=1 HTTP/1.1\r\nHost: h\r\nX-Mixed-Case: VaLuE\r\n"
        b"x-lower: v\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
    )
    (req,) = await _send_recorded(make_balancer, head + b"\r\nabc")
    assert req.head == head + b"X-Forwarded-For: 127.0.0.1\r\n\r\n"
    assert req.body == b"abc"


async def _hop_answer(server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    async for _ in requests(r, w):
        body = b"response with hop-by-hop fields"
        w.write(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n"
            b"X-Hop: 1\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nTrailer: X-T\r\n"
            b"X-End: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )


async def test_hop_by_hop_response_fields_not_relayed(make_balancer: BalancerFactory) -> None:
    lb, _ = await raw_balancer(make_balancer, _hop_answer)
    async with await Client.open(lb.service.port) as c:
        for _ in range(2):
            resp = await c.request("GET", "/resp?id=1")
            names = {n.decode().lower() for n, _ in resp.headers}
            assert names == {"x-end", "set-cookie", "content-length"}
            assert resp.all("Set-Cookie") == ["a=1", "b=2"]
            assert resp.body == b"response with hop-by-hop fields"


async def test_request_transfer_codings_other_than_chunked_are_501(
    make_balancer: BalancerFactory,
) -> None:
    """Replicas rarely understand ``gzip, chunked`` (h11 refuses it): 501 as nginx answers,
    before any byte reaches a replica (RFC 9112 §6.1)."""
    handler, seen = recorder()
    lb, _ = await raw_balancer(make_balancer, handler)
    head = request_bytes("POST", "/te?id=1", headers=[("Transfer-Encoding", "gzip, chunked")])
    async with await Client.open(lb.service.port) as c:
        await c.send(head + b"3\r\n\x1f\x8b\x08\r\n0\r\n\r\n")
        resp = await c.response()
    assert resp.status == 501
    assert resp.json() == {
        "message": "<Error> Transfer coding not implemented",
        "status": "failure",
    }
    assert seen == []

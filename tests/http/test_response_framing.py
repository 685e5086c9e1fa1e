"""Upstream response framing relayed to the client: chunked, close-delimited, HEAD, 204/304,
interim 1xx responses, and upstream connections that end oddly."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Balancer, BalancerFactory
from tests.http.conftest import raw_balancer
from tests.http.replicas import ok, requests
from tests.http.wire import Client, request_bytes

# -- through the aiohttp echo replica --------------------------------------------------------


async def test_chunked_response_relayed(echo_lb: Balancer) -> None:
    async with await Client.open(echo_lb.service.port) as c:
        resp = await c.request("GET", "/chunked?id=1&n=40")
        assert resp.status == 200 and resp.chunked
        assert resp.get("Content-Length") is None
        assert resp.body == b"".join(f"part {i};".encode() for i in range(40))
        assert (await c.request("GET", "/echo?id=1")).status == 200  # still in step


async def test_head_has_no_body_although_content_length(echo_lb: Balancer) -> None:
    async with await Client.open(echo_lb.service.port) as c:
        get = await c.request("GET", "/status/200?id=h")
        head = await c.request("HEAD", "/status/200?id=h")
        assert head.status == 200
        assert head.get("Content-Length") == str(len(get.body))
        # Had the HEAD answer carried a body, this next response would be garbled.
        after = await c.request("GET", "/echo?id=h")
        assert after.status == 200 and after.json()["method"] == "GET"


@pytest.mark.parametrize("code", [204, 304])
async def test_bodiless_status_then_next_request(echo_lb: Balancer, code: int) -> None:
    async with await Client.open(echo_lb.service.port) as c:
        for i in range(3):
            resp = await c.request("GET", f"/status/{code}?id={i}")
            assert resp.status == code
            assert resp.get("ETag") == '"v1"'
            nxt = await c.request("GET", f"/echo?id={i}")
            assert nxt.status == 200 and nxt.json()["path_qs"] == f"/echo?id={i}"


async def test_expect_100_continue(echo_lb: Balancer) -> None:
    body = b"sent only after 100 Continue"
    head = request_bytes(
        "POST",
        "/echo?id=cont",
        headers=[("Expect", "100-continue"), ("Content-Length", str(len(body)))],
    )
    async with await Client.open(echo_lb.service.port) as c:
        await c.send(head)
        interim = await c.response(stop_at_interim=True, limit_s=3.0)
        assert interim.status == 100
        await c.send(body)
        final = await c.response()
        assert final.status == 200
        assert final.json()["body"] == body.decode()
        assert (await c.request("GET", "/echo?id=cont")).status == 200


# -- through raw replicas --------------------------------------------------------------------


async def _close_delimited(
    server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    async for req in requests(r, w):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for i in range(20):
            w.write(b"line %d of %s\n" % (i, req.target))
            await w.drain()
        return  # the close ends the body


async def test_close_delimited_body_relayed_then_client_closed(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await raw_balancer(make_balancer, _close_delimited)
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("GET", "/cd?id=1")
        assert resp.status == 200
        assert resp.get("Content-Length") is None and resp.get("Transfer-Encoding") is None
        assert resp.close_delimited  # read until the balancer closed the connection
        assert resp.body == b"".join(b"line %d of /cd?id=1\n" % i for i in range(20))
    async with await Client.open(lb.service.port) as c:  # and the balancer carries on
        assert (await c.request("GET", "/cd?id=2")).status == 200


async def _head_with_length(
    server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    async for req in requests(r, w):
        if req.method == b"HEAD":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Head: yes\r\n\r\n")
        else:
            w.write(ok(b"g" * 1000))


async def test_raw_head_answer_with_content_length(make_balancer: BalancerFactory) -> None:
    lb, _ = await raw_balancer(make_balancer, _head_with_length)
    async with await Client.open(lb.service.port) as c:
        for _ in range(3):
            head = await c.request("HEAD", "/h?id=1")
            assert head.status == 200 and head.get("Content-Length") == "1000"
            assert head.get("X-Head") == "yes"
            get = await c.request("GET", "/h?id=1")
            assert get.body == b"g" * 1000


async def _head_with_body(server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    async for req in requests(r, w):
        if req.method == b"HEAD":  # wrong: a body on a HEAD answer, at once or a bit later
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            if req.path == b"/later":
                await w.drain()
                await asyncio.sleep(0.02)
            w.write(b"hello")
        else:
            w.write(ok(b"hello"))


@pytest.mark.parametrize("path", ["/at-once", "/later"])
async def test_body_wrongly_sent_on_head_answer_not_relayed(
    make_balancer: BalancerFactory, path: str
) -> None:
    lb, _ = await raw_balancer(make_balancer, _head_with_body)
    async with await Client.open(lb.service.port) as c:
        for _ in range(3):
            head = await c.request("HEAD", f"{path}?id=1")
            assert head.status == 200 and head.get("Content-Length") == "5"
            await asyncio.sleep(0.05)
            assert (await c.request("GET", f"{path}?id=1")).body == b"hello"


async def _early_hints(server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    async for _ in requests(r, w):
        w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.02)
        w.write(ok(b"final"))


async def test_interim_1xx_relayed_before_the_final_response(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await raw_balancer(make_balancer, _early_hints)
    async with await Client.open(lb.service.port) as c:
        for _ in range(2):
            resp = await c.request("GET", "/hints?id=1")
            assert [i.status for i in resp.interim] == [103]
            assert resp.interim[0].get("Link") == "</style.css>; rel=preload"
            assert (resp.status, resp.body) == (200, b"final")


async def _connection_close(
    server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    async for req in requests(r, w):
        w.write(ok(req.target, b"Connection: close"))
        return


async def test_upstream_connection_close_does_not_close_the_client(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await raw_balancer(make_balancer, _connection_close)
    async with await Client.open(lb.service.port) as c:
        for i in range(5):
            resp = await c.request("GET", f"/cc?id={i}")
            assert resp.body == f"/cc?id={i}".encode()
            assert resp.get("Connection") is None  # hop-by-hop: not relayed
        assert not await c.closed_by_peer(limit_s=0.2)


async def _trailing_garbage(
    server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    async for req in requests(r, w):
        w.write(ok(req.target) + b"GARBAGE AFTER THE BODY")


async def test_bytes_past_the_response_end_are_not_relayed(make_balancer: BalancerFactory) -> None:
    lb, _ = await raw_balancer(make_balancer, _trailing_garbage)
    async with await Client.open(lb.service.port) as c:
        for i in range(4):
            resp = await c.request("GET", f"/tg?id={i}")
            assert (resp.status, resp.body) == (200, f"/tg?id={i}".encode())
        assert not await c.closed_by_peer(limit_s=0.2)  # and nothing else arrived


async def _truncated(server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    async for _ in requests(r, w):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await w.drain()
        await asyncio.sleep(0.05)
        return


async def test_truncated_upstream_body_closes_the_client(make_balancer: BalancerFactory) -> None:
    lb, _ = await raw_balancer(make_balancer, _truncated)
    async with await Client.open(lb.service.port) as c:
        await c.send(request_bytes("GET", "/tr?id=1"))
        # A short body can only be signalled by the connection's end: a reset, so that no
        # client can take what came for the whole body (the bytes before it may be lost).
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)) as info:
            await c.response()
        if isinstance(info.value, asyncio.IncompleteReadError):
            assert info.value.partial == b"only part"


async def _chunked_garbage(
    server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    async for _ in requests(r, w):
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"not-hex\r\n")
        await asyncio.sleep(1.0)


async def test_bad_chunk_after_head_relayed_closes_the_client(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await raw_balancer(make_balancer, _chunked_garbage)
    async with await Client.open(lb.service.port) as c:
        await c.send(request_bytes("GET", "/cg?id=1"))
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            await c.response(limit_s=3.0)
    async with await Client.open(lb.service.port) as c:
        await c.send(request_bytes("GET", "/cg?id=2"))
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            await c.response(limit_s=3.0)

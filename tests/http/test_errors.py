"""Errors the balancer answers itself: malformed requests (400), oversized heads (431), slow
heads (408), upstream timeouts (504), invalid upstream answers (502), and the contract's 400
for a path no replica serves."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import Balancer, BalancerFactory
from tests.http.conftest import raw_balancer
from tests.http.replicas import echo_app, ok, requests
from tests.http.wire import Client, Response, chunked, request_bytes
from tests.support.runtime import InProcessRuntime


def assert_error(resp: Response, status: int, message: str) -> None:
    assert resp.status == status
    assert resp.get("Content-Type") == "application/json"
    assert json.loads(resp.body) == {"message": f"<Error> {message}", "status": "failure"}


MALFORMED = [
    b"BLAH\r\n\r\n",
    b"GET /x HTTP/1.1 extra\r\nHost: a\r\n\r\n",
    b"GET /x HTTP/7.3\r\nHost: a\r\n\r\n",
    b"GET /x HTTP/1.1\r\nBad Header Line\r\n\r\n",
    b"GET /x HTTP/1.1\r\nX : space before colon\r\n\r\n",
    b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32,  # a TLS ClientHello
]


@pytest.mark.parametrize("raw", MALFORMED, ids=range(len(MALFORMED)))
async def test_malformed_request_is_400_and_close(lb: Balancer, raw: bytes) -> None:
    async with await Client.open(lb.service.port) as c:
        await c.send(raw)
        resp = await c.response()
        assert_error(resp, 400, "Malformed HTTP request")
        assert resp.get("Connection") == "close"
        assert await c.closed_by_peer()


async def test_content_length_with_chunked_is_rejected(lb: Balancer) -> None:
    # Request smuggling shape: both framings on one request.
    raw = request_bytes(
        "POST",
        "/home",
        headers=[("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
    )
    async with await Client.open(lb.service.port) as c:
        await c.send(raw + b"0\r\n\r\nGET /home HTTP/1.1\r\n\r\n")
        assert_error(await c.response(), 400, "Malformed HTTP request")
        assert await c.closed_by_peer()


async def test_malformed_request_after_a_good_one_in_the_pipeline(lb: Balancer) -> None:
    async with await Client.open(lb.service.port) as c:
        await c.send(request_bytes("GET", "/home?id=1") + b"NOT HTTP AT ALL\r\n\r\n")
        first = await c.response()
        assert first.status == 200 and first.json()["status"] == "successful"
        assert_error(await c.response(), 400, "Malformed HTTP request")
        assert await c.closed_by_peer()


async def test_header_block_over_32k_is_431(lb: Balancer) -> None:
    headers = [(f"X-Filler-{i}", "f" * 1000) for i in range(40)]
    async with await Client.open(lb.service.port) as c:
        await c.send(request_bytes("GET", "/home", headers=headers))
        assert_error(await c.response(), 431, "Request header fields too large")
        assert await c.closed_by_peer()


async def test_header_block_just_under_the_limit_is_fine(lb: Balancer) -> None:
    headers = [(f"X-Filler-{i}", "f" * 1000) for i in range(30)]
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("GET", "/home?id=1", headers=headers)
        assert resp.status == 200


async def test_request_target_over_32k_is_431(lb: Balancer) -> None:
    async with await Client.open(lb.service.port) as c:
        await c.send(request_bytes("GET", "/home?pad=" + "p" * 40_000))
        assert_error(await c.response(), 431, "Request header fields too large")
        assert await c.closed_by_peer()


async def test_incomplete_head_is_408_after_the_header_timeout(
    make_balancer: BalancerFactory,
) -> None:
    lb = await make_balancer(header_timeout_s=0.5)
    async with await Client.open(lb.service.port) as c:
        started = asyncio.get_running_loop().time()
        await c.send(b"GET /home HTTP/1.1\r\nHost: slow\r\nX-Partial: ")
        resp = await c.response(limit_s=3.0)
        waited = asyncio.get_running_loop().time() - started
        assert_error(resp, 408, "Request timeout")
        assert await c.closed_by_peer()
    assert 0.5 <= waited < 2.0


async def test_idle_client_connection_closed_without_answer(
    make_balancer: BalancerFactory,
) -> None:
    lb = await make_balancer(client_idle_timeout_s=0.5)
    async with await Client.open(lb.service.port) as c:
        assert (await c.request("GET", "/home?id=1")).status == 200
        assert await c.closed_by_peer(limit_s=3.0)  # no bytes: just closed


async def _stall_or_answer(
    server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    async for req in requests(r, w):
        if req.path == b"/stall":
            await asyncio.sleep(3600)  # cancelled when the replica stops
        w.write(ok(b"answered " + req.target))


async def test_upstream_timeout_is_504_and_connection_still_usable(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await raw_balancer(make_balancer, _stall_or_answer, upstream_timeout_s=0.5)
    async with await Client.open(lb.service.port) as c:
        started = asyncio.get_running_loop().time()
        resp = await c.request("GET", "/stall?id=1", limit_s=3.0)
        waited = asyncio.get_running_loop().time() - started
        assert_error(resp, 504, "Replica Server 1 timed out")
        assert 0.5 <= waited < 2.0
        after = await c.request("GET", "/fine?id=1")
        assert (after.status, after.body) == (200, b"answered /fine?id=1")


GARBAGE = [
    b"THIS IS NOT HTTP\r\n\r\n",
    b"HTTP/1.1 2xx Oops\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\nbody",
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
async def test_upstream_garbage_is_502(make_balancer: BalancerFactory, garbage: bytes) -> None:
    async def handler(server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        async for req in requests(r, w):
            w.write(garbage if req.path == b"/bad" else ok(b"good"))

    lb, _ = await raw_balancer(make_balancer, handler)
    async with await Client.open(lb.service.port) as c:
        assert_error(
            await c.request("GET", "/bad?id=1"), 502, "Replica Server 1 sent an invalid response"
        )
        assert (await c.request("GET", "/ok?id=1")).body == b"good"


async def _hang_up(server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    async for _ in requests(r, w):
        return  # close without a byte of answer


async def test_upstream_closing_without_answer_is_502(make_balancer: BalancerFactory) -> None:
    lb, _ = await raw_balancer(make_balancer, _hang_up)
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("GET", "/x?id=1")
        assert_error(resp, 502, "Replica Server 1 closed the connection")
        resp = await c.request("GET", "/x?id=2")  # keep-alive survives the error answer
        assert_error(resp, 502, "Replica Server 1 closed the connection")


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/nowhere", "/nowhere"),
        ("/other?id=5&x=1", "/other"),
        ("/a%20b/c%2Fd?id=1", "/a b/c/d"),
    ],
)
async def test_upstream_404_is_contract_400_with_the_path(
    lb: Balancer, target: str, path: str
) -> None:
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("GET", target)
        assert resp.body == (
            b'{"message": "<Error> \'%s\' endpoint does not exist in server replicas", '
            b'"status": "failure"}' % path.encode()
        )
        assert_error(resp, 400, f"'{path}' endpoint does not exist in server replicas")
        # The replica's own 404 body was swallowed: the connection is still in step.
        home = await c.request("GET", "/home?id=1")
        assert home.status == 200 and home.json()["status"] == "successful"


async def _chunked_404(server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    async for req in requests(r, w):
        if req.path == b"/home":
            w.write(ok(b"home"))
        else:
            w.write(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n")
            w.write(chunked(b"not ", b"found"))


async def test_chunked_upstream_404_swallowed(make_balancer: BalancerFactory) -> None:
    lb, _ = await raw_balancer(make_balancer, _chunked_404)
    async with await Client.open(lb.service.port) as c:
        for _ in range(2):
            resp = await c.request("GET", "/gone?id=1")
            assert_error(resp, 400, "'/gone' endpoint does not exist in server replicas")
            assert (await c.request("GET", "/home?id=1")).body == b"home"


@pytest.mark.parametrize("replicas", [3, 0], ids=["404-to-400", "503-no-replica"])
async def test_error_answer_to_head_has_no_body(
    make_balancer: BalancerFactory, replicas: int
) -> None:
    lb = await make_balancer(replicas=replicas)
    async with await Client.open(lb.service.port) as c:
        head = await c.request("HEAD", "/nowhere?id=1")
        assert head.status == (400 if replicas else 503)
        after = await c.request("GET", "/nowhere?id=1", limit_s=2.0)
        assert after.status == head.status


async def _hints_then_404(server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    async for _ in requests(r, w):
        w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")


async def test_404_after_interim_response_is_still_contract_400(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await raw_balancer(make_balancer, _hints_then_404)
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("GET", "/gone?id=1")
        assert_error(resp, 400, "'/gone' endpoint does not exist in server replicas")


async def test_malformed_chunked_body_answered_and_closed(make_balancer: BalancerFactory) -> None:
    lb = await make_balancer(InProcessRuntime(echo_app), upstream_timeout_s=1.0)
    head = request_bytes("POST", "/echo?id=1", headers=[("Transfer-Encoding", "chunked")])
    async with await Client.open(lb.service.port) as c:
        await c.send(head + b"5\r\nhello\r\nNOT-HEX\r\n")
        resp = await c.response(limit_s=3.0)
        assert resp.status == 400
        assert await c.closed_by_peer(limit_s=3.0)


async def test_upgrade_request_answered_then_closed(echo_lb: Balancer) -> None:
    upgrade = request_bytes(
        "GET", "/echo?id=1", headers=[("Connection", "Upgrade"), ("Upgrade", "websocket")]
    )
    async with await Client.open(echo_lb.service.port) as c:
        await c.send(upgrade + request_bytes("GET", "/echo?id=2"))
        resp = await c.response()
        assert resp.status == 200
        assert "upgrade" not in [n for n, _ in resp.json()["headers"]]
        assert await c.closed_by_peer(limit_s=1.0)

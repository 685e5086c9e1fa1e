"""HTTP/1.0 clients: no Host needed, no chunked coding in answers, the connection closes."""

from __future__ import annotations

from tests.conftest import Balancer
from tests.http.wire import Client


async def test_http10_request_without_host(echo_lb: Balancer) -> None:
    async with await Client.open(echo_lb.service.port) as c:
        resp = await c.request("GET", "/echo?id=10", version="1.0", host=None)
        assert resp.status == 200
        seen = resp.json()
        assert seen["path_qs"] == "/echo?id=10"
        assert ["host", "localhost"] in seen["headers"]  # the balancer supplies one upstream
        assert await c.closed_by_peer()


async def test_http10_gets_chunked_answer_dechunked_then_close(echo_lb: Balancer) -> None:
    async with await Client.open(echo_lb.service.port) as c:
        resp = await c.request("GET", "/chunked?id=10&n=30", version="1.0", host=None)
        assert resp.status == 200
        assert not resp.chunked and resp.get("Transfer-Encoding") is None
        assert resp.close_delimited  # no length: the close ends it
        assert resp.body == b"".join(f"part {i};".encode() for i in range(30))


async def test_http10_post_with_length(echo_lb: Balancer) -> None:
    async with await Client.open(echo_lb.service.port) as c:
        resp = await c.request("POST", "/echo?id=10", body=b"old client", version="1.0")
        assert resp.json()["body"] == "old client"
        assert await c.closed_by_peer()


async def test_http10_keep_alive_dechunked_answer_is_delimited(echo_lb: Balancer) -> None:
    async with await Client.open(echo_lb.service.port) as c:
        resp = await c.request(
            "GET",
            "/chunked?id=10&n=3",
            headers=[("Connection", "keep-alive")],
            version="1.0",
            limit_s=2.0,  # a close-delimited body that never closes times out here
        )
        assert resp.body == b"part 0;part 1;part 2;"

"""Request bodies through the balancer: Content-Length, chunked, and large streamed bodies."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from tests.conftest import Balancer
from tests.http.wire import Client, chunked, request_bytes


async def test_content_length_body_echoed(echo_lb: Balancer) -> None:
    body = b'{"hello": "world", "bytes": "\xc3\xa9\\u0000"}'
    async with await Client.open(echo_lb.service.port) as c:
        resp = await c.request(
            "POST", "/echo?id=1", headers=[("Content-Type", "application/json")], body=body
        )
    seen = resp.json()
    assert resp.status == 200
    assert seen["body_len"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert ["content-length", str(len(body))] in seen["headers"]


async def test_empty_body_post(echo_lb: Balancer) -> None:
    async with await Client.open(echo_lb.service.port) as c:
        resp = await c.request("POST", "/echo?id=2", body=b"")
        assert resp.json()["body_len"] == 0
        assert (await c.request("GET", "/echo?id=2")).status == 200


async def test_chunked_request_body_arrives_intact(echo_lb: Balancer) -> None:
    pieces = [b"hello ", b"chunked\r\n", b"x" * 70_000, b"\x00\xff end"]
    expected = b"".join(pieces)
    body = b"6;ext=1\r\nhello \r\n" + chunked(*pieces[1:], trailers=b"X-Trailer: t\r\n")
    head = request_bytes("POST", "/echo?id=3", headers=[("Transfer-Encoding", "chunked")])
    async with await Client.open(echo_lb.service.port) as c:
        await c.send(head)
        for i in range(0, len(body), 1000):  # dribbled: chunk boundaries fall anywhere
            await c.send(body[i : i + 1000])
        resp = await c.response()
        seen = resp.json()
        assert resp.status == 200
        assert seen["body_len"] == len(expected)
        assert seen["body_sha256"] == hashlib.sha256(expected).hexdigest()
        names = [n for n, _ in seen["headers"]]
        assert "content-length" not in names
        assert ["transfer-encoding", "chunked"] in seen["headers"]
        # The connection stays in step after the chunked request.
        assert (await c.request("GET", "/echo?id=3")).json()["method"] == "GET"


async def _upload_and_download(port: int, head: bytes, body: bytes) -> tuple[bytes, bool]:
    async with await Client.open(port) as c:

        async def upload() -> None:
            await c.send(head)
            for i in range(0, len(body), 256 * 1024):
                await c.send(body[i : i + 256 * 1024])

        sender = asyncio.create_task(upload())
        try:
            resp = await c.response(limit_s=20.0)
        finally:
            await sender
        assert resp.status == 200
        return resp.body, resp.chunked


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_large_body_streamed_both_ways(echo_lb: Balancer, framing: str) -> None:
    payload = os.urandom(8 * 1024 * 1024)
    if framing == "chunked":
        head = request_bytes(
            "POST", "/stream-echo?id=big", headers=[("Transfer-Encoding", "chunked")]
        )
        size = 1024 * 1024
        body = chunked(*(payload[i : i + size] for i in range(0, len(payload), size)))
    else:
        head = request_bytes(
            "POST", "/stream-echo?id=big", headers=[("Content-Length", str(len(payload)))]
        )
        body = payload
    echoed, was_chunked = await _upload_and_download(echo_lb.service.port, head, body)
    assert was_chunked  # the replica streams its answer without a length
    assert len(echoed) == len(payload)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()

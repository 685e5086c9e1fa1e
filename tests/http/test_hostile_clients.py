"""What a hostile client sent after the hardening of issue 14, found by attacking it: each
case is a regression test (tests/http/test_smuggling.py is the corpus, test_timeouts.py the
timeout matrix)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.conftest import BalancerFactory
from tests.http.conftest import raw_balancer
from tests.http.replicas import HEARTBEAT_OK, ok, recorder
from tests.http.wire import Client, request_bytes

CHUNKS = 10_900  # ≈ 64 KiB of 1-byte chunks: the replay limit


def _tiny_chunks(count: int) -> bytes:
    return b"1\r\nX\r\n" * count + b"0\r\n\r\n"


async def _chunk_counter(
    server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter, seen: list[int]
) -> None:
    """Reads chunked requests, answers each with the number of chunks it came in."""
    while True:
        try:
            head = await r.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        if head.startswith(b"GET /heartbeat"):
            w.write(HEARTBEAT_OK)
            continue
        chunks = 0
        while (size := int((await r.readuntil(b"\r\n"))[:-2], 16)) != 0:
            await r.readexactly(size + 2)
            chunks += 1
        await r.readuntil(b"\r\n")
        seen.append(chunks)
        w.write(ok(b"%d" % chunks))


async def test_thousands_of_tiny_chunks_cost_little_and_go_upstream_coalesced(
    make_balancer: BalancerFactory,
) -> None:
    """The body of 10,900 one-byte chunks took 2.3 s of the event loop (a sum over every piece
    kept for a replay, per piece) and went upstream as 10,900 writes."""
    seen: list[int] = []

    async def handler(sid: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _chunk_counter(sid, r, w, seen)

    lb, _ = await raw_balancer(make_balancer, handler)
    head = request_bytes("POST", "/up?id=1", headers=[("Transfer-Encoding", "chunked")])
    async with await Client.open(lb.service.port) as c:
        started = time.monotonic()
        await c.send(head + _tiny_chunks(CHUNKS))
        resp = await c.response(limit_s=10.0)
        took = time.monotonic() - started
    print(f"\n[tiny chunks] {CHUNKS} chunks in {took:.3f} s; upstream got {seen} chunk(s)")
    assert resp.status == 200
    assert seen[0] < 100  # the chunks of one read go up as one (was one per client chunk)
    assert took < 1.0  # was 2.3 s on the same machine


async def test_nothing_is_forwarded_after_an_answer_that_closes(
    make_balancer: BalancerFactory,
) -> None:
    """RFC 9112 §9.6: after Connection: close, no further request is processed. A request in
    its own packet after the answer reached the replica."""
    handler, seen = recorder()
    lb, _ = await raw_balancer(make_balancer, handler)
    async with await Client.open(lb.service.port) as c:
        await c.send(request_bytes("GET", "/first?id=1", headers=[("Connection", "close")]))
        assert (await c.response()).status == 200
        await asyncio.sleep(0.1)
        with contextlib.suppress(ConnectionError):
            await c.send(request_bytes("DELETE", "/second?id=1"))
        await asyncio.sleep(0.3)
    assert [r.target for r in seen] == [b"/first?id=1"]


async def test_transfer_encoding_with_surrounding_whitespace_is_chunked(
    make_balancer: BalancerFactory,
) -> None:
    handler, seen = recorder()
    lb, _ = await raw_balancer(make_balancer, handler)
    head = request_bytes("POST", "/te?id=1", headers=[("Transfer-Encoding", "chunked ")])
    async with await Client.open(lb.service.port) as c:
        await c.send(head + b"5\r\nhello\r\n0\r\n\r\n")
        assert (await c.response()).status == 200
    assert seen[0].body == b"hello"


async def test_invalid_host_values_are_400_on_both_paths(make_balancer: BalancerFactory) -> None:
    handler, seen = recorder()
    lb, _ = await raw_balancer(make_balancer, handler)
    for raw in (
        b"GET /h?id=1 HTTP/1.1\r\nHost: x/../y@z\r\n\r\n",  # fast path
        b"POST /h?id=1 HTTP/1.1\r\nHost: a b\r\nContent-Length: 0\r\n\r\n",  # full path
        b"GET http://us@er/h HTTP/1.1\r\nHost: a\r\n\r\n",  # an authority with userinfo
    ):
        async with await Client.open(lb.service.port) as c:
            await c.send(raw)
            assert (await c.response()).status == 400, raw
    assert seen == []


async def test_x_forwarded_for_with_underscores_is_dropped(make_balancer: BalancerFactory) -> None:
    """A replica mapping fields to CGI names would read X_Forwarded_For as the balancer's own."""
    handler, seen = recorder()
    lb, _ = await raw_balancer(make_balancer, handler)
    async with await Client.open(lb.service.port) as c:
        for extra in ([("X_Forwarded_For", "6.6.6.6")], [("x-forwarded_for", "6.6.6.6")]):
            resp = await c.request("GET", "/x?id=1", headers=extra)
            assert resp.status == 200
    for req in seen:
        assert "6.6.6.6" not in req.head.decode()
        assert req.all("X-Forwarded-For") == ["127.0.0.1"]

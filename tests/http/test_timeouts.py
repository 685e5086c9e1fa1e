"""The timeout matrix: every state a client connection can be in has a timeout that applies
(``balancer.http.frontend.Timeouts``), and a response cut short is never delivered as complete.

States: head arriving (test_errors), body arriving with and without an early answer, waiting
for the replica, a response arriving too slowly, a response the client does not read, idle
keep-alive (test_errors); and the other side of each: transfers that progress are not cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

import pytest

from balancer.http.upstream import reset
from tests.conftest import Balancer, BalancerFactory, eventually
from tests.http.conftest import frontend, raw_balancer
from tests.http.replicas import HEARTBEAT_OK
from tests.http.wire import Client, read_response, request_bytes

FAST = {
    "header_timeout_s": 0.5,
    "client_timeout_s": 0.5,
    "upstream_timeout_s": 0.5,
    "client_idle_timeout_s": 5.0,
}
SWEEP_S = 0.25  # the sweeper's period: a timeout fires at most this late
BIG = 32 * 1024 * 1024

# What the replica saw of each request body: "complete" or "incomplete".
Outcomes = list[str]


def _content_length(head: bytes) -> int:
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def replica(outcomes: Outcomes):  # type: ignore[no-untyped-def]
    """A raw replica whose behaviour the request path chooses (see each branch)."""

    async def handler(server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await r.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            path = head.split(b" ", 2)[1].split(b"?", 1)[0]
            if path == b"/heartbeat":
                w.write(HEARTBEAT_OK)
                continue
            await _serve(path, head, r, w, outcomes)

    return handler


async def _early(head: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Answers before the body and never reads it."""
    w.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno")
    await asyncio.sleep(3600)


async def _stall(head: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


async def _half(head: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Part of a body, then nothing."""
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"h" * 100)
    await asyncio.sleep(3600)


async def _drip(head: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """20 pieces, 0.1 s apart: 2 s in all, each gap below every timeout."""
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n")
    for _ in range(20):
        await asyncio.sleep(0.1)
        w.write(b"d" * 100)


async def _big(head: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
    piece = b"b" * (1 << 20)
    with contextlib.suppress(ConnectionError):
        for _ in range(BIG >> 20):
            w.write(piece)
            await w.drain()


async def _close_reset(head: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """A close-delimited body that ends in a reset, not a close."""
    w.write(b"HTTP/1.1 200 OK\r\n\r\n" + b"c" * 100)
    await w.drain()
    await asyncio.sleep(0.1)
    reset(w.transport)
    raise ConnectionResetError


async def _think(head: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Answers after 0.3 s: below every timeout of the matrix, above the sweeper's period."""
    await asyncio.sleep(0.3)
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


BEHAVIOURS = {
    b"/think": _think,
    b"/early": _early,
    b"/stall": _stall,
    b"/half": _half,
    b"/drip": _drip,
    b"/big": _big,
    b"/close-reset": _close_reset,
}


async def _serve(
    path: bytes,
    head: bytes,
    r: asyncio.StreamReader,
    w: asyncio.StreamWriter,
    outcomes: Outcomes,
) -> None:
    if path in BEHAVIOURS:
        await BEHAVIOURS[path](head, r, w)
        return
    # /wait-body, /upload: read the body, then answer its length
    length = _content_length(head)
    try:
        await r.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        outcomes.append("incomplete")
        raise
    outcomes.append("complete")
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(b"%d" % length), length))


async def _lb(make_balancer: BalancerFactory, **overrides: object) -> tuple[Balancer, Outcomes]:
    outcomes: Outcomes = []
    lb, _ = await raw_balancer(make_balancer, replica(outcomes), **{**FAST, **overrides})
    return lb, outcomes


async def _closed_within(c: Client, limit_s: float) -> float:
    """Seconds until the balancer closes ``c`` (EOF or reset), reading and dropping bytes."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(limit_s):
            while await c.reader.read(1 << 16):
                pass
    return loop.time() - started


async def _until(predicate: Callable[[], object], limit_s: float = 3.0) -> float:
    async def check() -> bool:
        return bool(predicate())

    return await eventually(check, timeout_s=limit_s)


# -- the request body ------------------------------------------------------------------------


async def test_body_that_never_comes_after_an_early_answer_is_closed(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await _lb(make_balancer)
    async with await Client.open(lb.service.port) as c:
        await c.send(request_bytes("POST", "/early?id=1", headers=[("Content-Length", "100000")]))
        resp = await c.response()
        assert (resp.status, resp.body) == (401, b"no")
        waited = await _closed_within(c, 3.0)
    assert waited < FAST["client_timeout_s"] + 2 * SWEEP_S + 0.5


async def test_body_that_never_comes_is_408_and_the_replica_sees_it_incomplete(
    make_balancer: BalancerFactory,
) -> None:
    lb, outcomes = await _lb(make_balancer)
    async with await Client.open(lb.service.port) as c:
        await c.send(
            request_bytes("POST", "/wait-body?id=1", headers=[("Content-Length", "100")]) + b"x"
        )
        resp = await c.response(limit_s=3.0)
        assert resp.status == 408
        assert await c.closed_by_peer()
    await _until(lambda: outcomes)
    assert outcomes == ["incomplete"]


async def test_upload_that_progresses_outlives_every_timeout(
    make_balancer: BalancerFactory,
) -> None:
    lb, outcomes = await _lb(make_balancer)
    pieces = 20
    async with await Client.open(lb.service.port) as c:
        head = request_bytes(
            "POST", "/upload?id=1", headers=[("Content-Length", str(pieces * 65536))]
        )
        await c.send(head)
        for _ in range(pieces):  # 2 s in all, four times the upstream and client timeouts
            await asyncio.sleep(0.1)
            await c.send(b"u" * 65536)
        resp = await c.response(limit_s=3.0)
    assert (resp.status, resp.body) == (200, b"%d" % (pieces * 65536))
    assert outcomes == ["complete"]


async def test_many_early_answered_bodies_release_their_descriptors(
    make_balancer: BalancerFactory,
) -> None:
    """The attack of issue 14: bodies announced and never sent, answered early by the replica.
    After the client timeout the balancer holds none of those connections."""
    lb, _ = await _lb(make_balancer)
    fe = frontend(lb)
    clients = [await Client.open(lb.service.port) for _ in range(200)]
    try:
        for c in clients:
            c.writer.write(
                request_bytes("POST", "/early?id=1", headers=[("Content-Length", "100000")])
            )
        await _until(lambda: len(fe.connections) == 200)
        waited = await _until(lambda: not fe.connections, limit_s=5.0)
    finally:
        for c in clients:
            c.abort()
    assert waited < FAST["client_timeout_s"] + 1.5


# -- waiting for the replica -------------------------------------------------------------------


async def test_replica_that_never_answers_is_504(make_balancer: BalancerFactory) -> None:
    lb, _ = await _lb(make_balancer)
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("GET", "/stall?id=1", limit_s=3.0)
    assert resp.status == 504


async def test_response_that_stops_halfway_is_a_reset_not_a_complete_answer(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await _lb(make_balancer)
    async with await Client.open(lb.service.port) as c:
        await c.send(request_bytes("GET", "/half?id=1"))
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await c.response(limit_s=3.0)


async def test_download_that_progresses_outlives_the_upstream_timeout(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await _lb(make_balancer)
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("GET", "/drip?id=1", limit_s=5.0)
    assert (resp.status, resp.body) == (200, b"d" * 2000)


async def test_total_upstream_timeout_cuts_a_download_that_progresses(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await _lb(make_balancer, upstream_total_timeout_s=0.8)
    async with await Client.open(lb.service.port) as c:
        await c.send(request_bytes("GET", "/drip?id=1"))
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await c.response(limit_s=5.0)


async def test_close_delimited_body_ended_by_a_reset_is_not_complete(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await _lb(make_balancer)
    async with await Client.open(lb.service.port) as c:
        await c.send(request_bytes("GET", "/close-reset?id=1"))
        with pytest.raises(ConnectionError):
            await c.response(limit_s=3.0)


# -- the client reading the response -----------------------------------------------------------


async def _small_buffer_client(port: int) -> Client:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
    return Client(reader, writer)


async def test_client_that_stops_reading_is_cut_off(make_balancer: BalancerFactory) -> None:
    lb, _ = await _lb(make_balancer)
    fe = frontend(lb)
    c = await _small_buffer_client(lb.service.port)
    try:
        await c.send(request_bytes("GET", "/big?id=1"))
        await _until(lambda: any(conn.write_paused for conn in fe.connections))
        waited = await _until(lambda: not fe.connections, limit_s=5.0)
        assert waited < FAST["client_timeout_s"] + 1.0
        received = 0
        with contextlib.suppress(ConnectionError):
            while piece := await c.reader.read(1 << 20):
                received += len(piece)
        assert received < BIG  # cut short, and the client can tell
    finally:
        c.abort()


async def test_client_that_reads_slowly_gets_the_whole_response(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await _lb(make_balancer)
    c = await _small_buffer_client(lb.service.port)
    try:
        await c.send(request_bytes("GET", "/big?id=1"))
        head = await c.reader.readuntil(b"\r\n\r\n")
        assert _content_length(head) == BIG
        received = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(30):
            while received < BIG:  # about 2 MB per 0.1 s: a few seconds, each gap short
                for _ in range(32):
                    received += len(await c.reader.read(1 << 16))
                await asyncio.sleep(0.1)
        assert received == BIG
        assert loop.time() - started > 2 * FAST["client_timeout_s"]  # it did read slowly
    finally:
        c.abort()


async def test_pipelined_head_after_a_response_still_has_the_header_timeout(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await _lb(make_balancer)
    async with await Client.open(lb.service.port) as c:
        await c.send(request_bytes("GET", "/drip?id=1") + b"GET /x HTTP/1.1\r\nHost: a\r\n")
        first = await read_response(c.reader, limit_s=5.0)
        assert first.status == 200
        second = await c.response(limit_s=3.0)
        assert second.status == 408
        assert await c.closed_by_peer()


# -- descriptors -----------------------------------------------------------------------------


async def test_connections_past_max_connections_are_refused_at_once(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await _lb(make_balancer, max_connections=5)
    fe = frontend(lb)
    held = [await Client.open(lb.service.port) for _ in range(5)]
    try:
        await _until(lambda: len(fe.connections) == 5)
        async with await Client.open(lb.service.port) as extra:
            assert await extra.closed_by_peer()
        assert fe.stats.refused_connections == 1
        assert len(fe.connections) == 5
        held.pop().abort()
        await _until(lambda: len(fe.connections) == 4)
        async with await Client.open(lb.service.port) as c:
            assert (await c.request("GET", "/drip?id=1")).status == 200
    finally:
        for c in held:
            c.abort()


# -- bytes that are not progress -------------------------------------------------------------


async def _trickle_empty_lines(c: Client, every_s: float, count: int) -> None:
    """Empty lines, which llhttp skips before a request line: no head, no body, no progress."""
    with contextlib.suppress(ConnectionError, RuntimeError):
        for _ in range(count):
            await asyncio.sleep(every_s)
            c.writer.write(b"\r\n")


async def test_empty_lines_do_not_hold_off_the_upstream_timeout(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await _lb(make_balancer)
    async with await Client.open(lb.service.port) as c:
        await c.send(request_bytes("GET", "/stall?id=1"))
        trickle = asyncio.create_task(_trickle_empty_lines(c, 0.2, 20))
        try:
            resp = await c.response(limit_s=3.0)  # was: no answer while the lines kept coming
        finally:
            trickle.cancel()
    assert resp.status == 504


async def test_empty_lines_do_not_keep_a_client_that_stopped_reading(
    make_balancer: BalancerFactory,
) -> None:
    lb, _ = await _lb(make_balancer)
    fe = frontend(lb)
    c = await _small_buffer_client(lb.service.port)
    trickle = asyncio.create_task(_trickle_empty_lines(c, 0.2, 40))
    try:
        await c.send(request_bytes("GET", "/big?id=1"))
        await _until(lambda: any(conn.write_paused for conn in fe.connections))
        waited = await _until(lambda: not fe.connections, limit_s=5.0)
        assert waited < FAST["client_timeout_s"] + 1.0
    finally:
        trickle.cancel()
        c.abort()


async def test_a_request_after_an_idle_spell_longer_than_the_timeouts_is_answered(
    make_balancer: BalancerFactory,
) -> None:
    """Stalls are counted from the request's start: a keep-alive connection idle for longer
    than the upstream and client timeouts (but not the idle one) serves its next request."""
    lb, _ = await _lb(make_balancer)
    async with await Client.open(lb.service.port) as c:
        assert (await c.request("GET", "/think?id=1", limit_s=5.0)).status == 200
        await asyncio.sleep(1.5)  # three times the upstream and client timeouts
        assert (await c.request("GET", "/think?id=2", limit_s=5.0)).status == 200

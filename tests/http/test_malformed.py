"""Malformed and hostile requests on the public port: every one gets a 4xx in the contract's
error shape (where a body is possible) or a close, never a crash or a 5xx of the balancer's
own, and the balancer serves the next valid request.

Hand-written cases pin the limits (request target 8000 bytes → 414; one field line 8000 bytes,
100 field lines, the 32 KiB head → 431), CONNECT, HTTP/0.9, a missing Host, bad framing and
trailers; then hypothesis fuzzes request heads (valid parts, hostile bytes and near-limit
sizes) over raw sockets, deterministically.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import socket
import time
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balancer.http.client import MAX_FIELDS
from tests.conftest import Balancer, BalancerFactory
from tests.http.conftest import frontend
from tests.http.wire import Client, Response, chunked, request_bytes

ERROR_SHAPE = re.compile(r"<Error> .+")
T = TypeVar("T")
FUZZ_EXAMPLES = 300


def assert_error(resp: Response, status: int, message: str) -> None:
    assert resp.status == status, (resp.status, resp.body)
    assert resp.get("Content-Type") == "application/json"
    assert json.loads(resp.body) == {"message": f"<Error> {message}", "status": "failure"}


async def assert_healthy(lb: Balancer) -> None:
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("GET", "/home?id=1")
        assert resp.status == 200 and resp.json()["status"] == "successful"


def filler(count: int) -> list[tuple[str, str]]:
    return [(f"X-Filler-{i}", "f") for i in range(count)]


# (request, status, message): the balancer answers and closes the connection.
REFUSED = [
    (request_bytes("GET", "/home?pad=" + "p" * 8_000), 414, "Request target too long"),
    (request_bytes("GET", "/lb/lookup?key=" + "k" * 8_000), 414, "Request target too long"),
    (
        request_bytes("GET", "/home", headers=[("X-Big", "b" * 8_001)]),
        431,
        "Request header fields too large",
    ),
    (
        request_bytes("GET", "/rep", headers=[("X-Big", "b" * 8_001)]),
        431,
        "Request header fields too large",
    ),
    (  # Host + MAX_FIELDS others
        request_bytes("GET", "/home", headers=filler(MAX_FIELDS)),
        431,
        "Request header fields too large",
    ),
    (
        request_bytes("POST", "/add", headers=filler(MAX_FIELDS), body=b'{"n": 1}'),
        431,
        "Request header fields too large",
    ),
    (  # fields the data path drops count too
        request_bytes("GET", "/home", headers=[("Keep-Alive", "x")] * (MAX_FIELDS + 1)),
        431,
        "Request header fields too large",
    ),
    (
        request_bytes("GET", "/home", headers=[("Proxy-Authorization", "p" * 8_001)]),
        431,
        "Request header fields too large",
    ),
    (
        request_bytes("GET", "/home", headers=[("X-Forwarded-For", "1.2.3.4")] * 1200),
        431,
        "Request header fields too large",
    ),
    (b"GET /home HTTP/1.1\r\n\r\n", 400, "Malformed HTTP request"),  # no Host (RFC 9112 §3.2)
    (b"GET /rep HTTP/1.1\r\n\r\n", 400, "Malformed HTTP request"),
    (b"GET /rep HTTP/1.1\r\nX-Host: a\r\n\r\n", 400, "Malformed HTTP request"),
    (b"GET /rep HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Malformed HTTP request"),
    (
        b"POST /home HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nHost: b\r\n\r\nx",
        400,
        "Malformed HTTP request",
    ),
    (b"GET /home\r\n\r\n", 400, "Malformed HTTP request"),  # HTTP/0.9
    (b"GET /home HTTP/1.1\nHost: a\n\n", 400, "Malformed HTTP request"),  # bare LF
    (b"get /home HTTP/1.1\r\nHost: a\r\n\r\n", 400, "Malformed HTTP request"),
    (b"GET /h\x7fme HTTP/1.1\r\nHost: a\r\n\r\n", 400, "Malformed HTTP request"),
    ("GET /hömé HTTP/1.1\r\nHost: a\r\n\r\n".encode(), 400, "Malformed HTTP request"),
    (b"GET /home HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", 400, "Malformed HTTP request"),
    (b"GET /home HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400, "Malformed HTTP request"),
    (b"GET /home HTTP/1.1\r\nHost: a\r\nX-A: a\r\n folded\r\n\r\n", 400, "Malformed HTTP request"),
    (
        request_bytes("POST", "/home", headers=[("Content-Length", "-1")]),
        400,
        "Malformed HTTP request",
    ),
    (
        request_bytes("POST", "/add", headers=[("Content-Length", "1x")]),
        400,
        "Malformed HTTP request",
    ),
    (
        request_bytes("POST", "/home", headers=[("Transfer-Encoding", "chunked, identity")])
        + b"0\r\n\r\n",
        400,
        "Malformed HTTP request",
    ),
    (
        request_bytes("POST", "/home", headers=[("Transfer-Encoding", "identity")]),
        400,
        "Malformed HTTP request",
    ),
    (
        request_bytes("POST", "/add", headers=[("Transfer-Encoding", "chunked")])
        + b"fffffffffffffffffffff\r\n",
        400,
        "Malformed HTTP request",
    ),
    (
        request_bytes("POST", "/add", headers=[("Transfer-Encoding", "chunked")]) + b"zz\r\n",
        400,
        "Malformed HTTP request",
    ),
]


@pytest.mark.parametrize(("raw", "status", "message"), REFUSED, ids=range(len(REFUSED)))
async def test_refused_with_the_error_shape_and_closed(
    lb: Balancer, raw: bytes, status: int, message: str
) -> None:
    async with await Client.open(lb.service.port) as c:
        await c.send(raw)
        resp = await c.response()
        assert_error(resp, status, message)
        assert resp.get("Connection") == "close"
        assert await c.closed_by_peer()
    await assert_healthy(lb)


async def test_just_under_every_limit_is_served(lb: Balancer) -> None:
    target = "/home?id=1&pad="
    cases = [
        request_bytes("GET", target + "p" * (8_000 - len(target))),
        request_bytes("GET", "/home?id=1", headers=[("X-Big", "b" * (8_000 - len("X-Big: ")))]),
        request_bytes("GET", "/home?id=1", headers=filler(MAX_FIELDS - 1)),  # + Host
        request_bytes("POST", "/home?id=1", headers=filler(MAX_FIELDS - 2), body=b"x"),
        request_bytes("GET", "/rep", headers=filler(MAX_FIELDS - 1)),
    ]
    async with await Client.open(lb.service.port) as c:
        for raw in cases:
            await c.send(raw)
            resp = await c.response()
            assert resp.status in (200, 405), (raw[:60], resp.status, resp.body)  # 405: POST /home


async def test_a_long_target_after_a_good_request_in_the_pipeline(lb: Balancer) -> None:
    async with await Client.open(lb.service.port) as c:
        await c.send(
            request_bytes("GET", "/home?id=1") + request_bytes("GET", "/home?x=" + "x" * 9000)
        )
        assert (await c.response()).status == 200
        assert_error(await c.response(), 414, "Request target too long")
        assert await c.closed_by_peer()


async def test_connect_is_answered_then_closed(
    lb: Balancer, caplog: pytest.LogCaptureFixture
) -> None:
    """CONNECT used to take the fast path, where llhttp's HttpParserUpgrade (not an
    HttpParserError) escaped: the connection died unanswered ("Fatal error on transport")."""
    async with await Client.open(lb.service.port) as c:
        await c.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        resp = await c.response()
        assert 400 <= resp.status < 500
        assert await c.closed_by_peer()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await assert_healthy(lb)


async def test_trailers_are_not_kept(lb: Balancer) -> None:
    """Trailer fields of a chunked request are not forwarded; they are not kept either (an
    endless trailer section used to grow a list until the request ended)."""
    trailers = b"".join(b"X-T%d: v\r\n" % i for i in range(2000))
    head = request_bytes("PUT", "/home?id=1", headers=[("Transfer-Encoding", "chunked")])
    async with await Client.open(lb.service.port) as c:
        await c.send(head + b"3\r\nabc\r\n0\r\n" + trailers[: len(trailers) // 2])
        await asyncio.sleep(0.1)
        (conn,) = frontend(lb).connections
        assert conn._headers == []
        await c.send(trailers[len(trailers) // 2 :] + b"\r\n")
        resp = await c.response()
        assert 200 <= resp.status < 500
    await assert_healthy(lb)


async def test_chunked_body_to_the_admin_api_is_read_and_checked(lb: Balancer) -> None:
    head = request_bytes("POST", "/add", headers=[("Transfer-Encoding", "chunked")])
    async with await Client.open(lb.service.port) as c:
        await c.send(head + chunked(b'{"n": 1, ', b'"n": 2}'))
        assert_error(await c.response(), 400, "Request body is not valid JSON: duplicate key 'n'")
        await c.send(head + chunked(*[b" " * 8192] * 9))
        assert_error(await c.response(), 413, "Request body is larger than 65536 bytes")
    assert await lb.names() == ["Server 1", "Server 2", "Server 3"]


# -- hypothesis over raw sockets --------------------------------------------------------------

METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"CONNECT", b"PATCH", b"get"]
TARGETS = [
    b"/home",
    b"/home?id=1",
    b"/heartbeat",
    b"/rep",
    b"/add",
    b"/rm",
    b"/lb/status",
    b"/lb/settings",
    b"/lb/lookup?key=a",
    b"/lb/%6dembership",
    b"/lb/membership#x",
    b"/metrics",
    b"*",
    b"http://x/home",
    b"example.com:443",
    b"/a b",
    b"/\xff",
    b"",
]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.12", b"http/1.1", b""]
NAMES = [
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Expect",
    b"Upgrade",
    b"X-Forwarded-For",
    b"Keep-Alive",
    b"TE",
    b"Trailer",
    b"X-Request-ID",
    b"X-A",
]
VALUES = [
    b"0",
    b"4",
    b"-1",
    b"chunked",
    b"gzip, chunked",
    b"chunked, identity",
    b"close",
    b"keep-alive",
    b"Upgrade",
    b"100-continue",
    b"websocket",
    b"1.2.3.4",
    b"",
    b"a\x00b",
    b"a\rb",
]


def mostly(usual: st.SearchStrategy[T], odd: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``usual`` four times in five: the rest of the request stays parseable enough to matter."""
    return st.integers(0, 4).flatmap(lambda i: odd if i == 0 else usual)


field = st.tuples(
    mostly(st.sampled_from(NAMES), st.binary(max_size=8)),
    mostly(st.sampled_from(VALUES), st.binary(max_size=12)),
)
fields = mostly(
    st.lists(field, max_size=5).map(lambda f: [(b"Host", b"fuzz"), *f]),
    st.lists(field, max_size=5)
    | st.integers(MAX_FIELDS - 2, MAX_FIELDS + 2).map(
        lambda n: [(b"Host", b"fuzz")] + [(b"X-F%d" % i, b"v") for i in range(n)]
    ),
)
heads = st.builds(
    lambda method, target, version, fields, sep, body: (
        method
        + b" "
        + target
        + (b" " + version if version else b"")
        + sep
        + b"".join(name + b": " + value + sep for name, value in fields)
        + sep
        + body
    ),
    mostly(st.sampled_from(METHODS), st.binary(min_size=1, max_size=6)),
    mostly(
        st.sampled_from(TARGETS[:11]),
        st.sampled_from(TARGETS[11:])
        | st.binary(max_size=12).map(lambda b: b"/" + b)
        | st.integers(7_990, 8_010).map(lambda n: b"/home?" + b"q" * n),
    ),
    mostly(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]), st.sampled_from(VERSIONS)),
    fields,
    mostly(st.just(b"\r\n"), st.sampled_from([b"\n", b"\r", b"\r\n "])),
    st.sampled_from([b"", b"abcd", b"4\r\nabcd\r\n0\r\n\r\n", b"zz\r\n", b"0\r\nX: y\r\n\r\n"])
    | st.binary(max_size=16),
)
raw_requests = heads | st.binary(min_size=1, max_size=64)
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*\r\n")


def exchange(port: int, raw: bytes, wait_s: float = 0.3) -> bytes:
    """Send ``raw``; what came back until the peer closed, or went quiet: for ``wait_s``
    before a complete answer, briefly after one (it may be followed by pipelined ones)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(raw)
        except ConnectionError:
            return b""  # the balancer already answered and closed
        received = b""
        while True:
            sock.settimeout(0.02 if complete(received) else wait_s)
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionError):
                return received
            if not chunk:
                return received
            received += chunk


def complete(received: bytes) -> bool:
    """Whether ``received`` ends with a complete response framed by Content-Length."""
    end = received.rfind(b"\r\n\r\n")
    if end < 0:
        return False
    start = received.rfind(b"HTTP/1.", 0, end)
    length = re.search(rb"\r\ncontent-length: *(\d+)", received[start:end].lower())
    return length is not None and len(received) - end - 4 >= int(length.group(1))


def check_answers(raw: bytes, received: bytes) -> None:
    """Every complete response in ``received``: no 5xx but an upstream's 502/503/504, and the
    balancer's own errors in the contract's shape."""
    at = 0
    while (match := STATUS_LINE.match(received, at)) is not None:
        status = int(match.group(1))
        assert status < 500 or status in (502, 503, 504), (raw[:200], received[:300])
        end = received.find(b"\r\n\r\n", at)
        if end < 0:
            return
        head = received[at:end].decode("latin-1").lower()
        length = re.search(r"\r\ncontent-length: *(\d+)", head)
        if length is None:
            return  # chunked or close-delimited: a replica's answer, not parsed further
        size = 0 if at == 0 and raw.startswith(b"HEAD ") else int(length.group(1))
        body = received[end + 4 : end + 4 + size]
        if status >= 400 and "content-type: application/json" in head and body:
            doc = json.loads(body)
            assert doc["status"] == "failure" and ERROR_SHAPE.fullmatch(doc["message"]), body
        at = end + 4 + len(body)


def healthy(port: int) -> None:
    answer = exchange(port, request_bytes("GET", "/home?id=1"), wait_s=5.0)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def fuzz_heads(port: int, examples: int) -> collections.Counter[str]:
    """Run the fuzz (in a thread); how many exchanges began with each status (or none)."""
    seen: collections.Counter[str] = collections.Counter()

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(raw_requests)
    def one(raw: bytes) -> None:
        received = exchange(port, raw)
        first = STATUS_LINE.match(received)
        seen["none" if first is None else first.group(1).decode()] += 1
        check_answers(raw, received)
        healthy(port)

    one()
    return seen


@pytest.mark.timeout(300)
async def test_fuzzed_request_heads(
    make_balancer: BalancerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    lb = await make_balancer(
        heartbeat_interval_s=1.0, heartbeat_timeout_s=2.0, header_timeout_s=5.0
    )
    started = time.monotonic()
    seen = await asyncio.to_thread(fuzz_heads, lb.service.port, FUZZ_EXAMPLES)
    took = time.monotonic() - started
    print(f"raw fuzz: {seen.total()} request heads in {took:.1f}s: {dict(sorted(seen.items()))}")
    crashes = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and (r.name == "asyncio" or r.name.startswith("balancer"))
    ]
    assert not crashes, [r.getMessage() for r in crashes]
    assert await lb.names() == ["Server 1", "Server 2", "Server 3"]
    await assert_healthy(lb)

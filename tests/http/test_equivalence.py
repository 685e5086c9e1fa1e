"""Through the balancer or straight to the replica, a client sees the same answer: status,
body and end-to-end headers (Date, Server and hop-by-hop fields aside)."""

from __future__ import annotations

import json
import os

from tests.conftest import BalancerFactory
from tests.http.replicas import echo_app
from tests.http.wire import Client, Response, chunked, request_bytes
from tests.support.runtime import InProcessRuntime

IGNORED = frozenset(
    {
        "date",
        "server",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-connection",
    }
)

JSON = [("Content-Type", "application/json")]
BIG = os.urandom(300_000)


def _chunked_post(target: str, *pieces: bytes) -> tuple[bytes, bool]:
    head = request_bytes("POST", target, headers=[("Transfer-Encoding", "chunked")])
    return head + chunked(*pieces), False


def _cases() -> list[tuple[bytes, bool]]:
    """(raw request, is HEAD)."""

    def r(
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> tuple[bytes, bool]:
        return request_bytes(method, target, headers=headers, body=body), method == "HEAD"

    return [
        r("GET", "/echo"),
        r("GET", "/echo?id=1"),
        r("GET", "/echo?a=1&b=%20x&c=%E2%9C%93&d=&e"),
        r("GET", "/deep/nested/path/?x=y&x=z"),
        r("GET", "/echo", [("X-C-One", "1"), ("X-C-Multi", "a"), ("X-C-Multi", "b")]),
        r("GET", "/echo", [("X-Request-ID", "rid-42"), ("Accept", "application/json")]),
        r("GET", "/echo", [("Cookie", "session=abc; theme=dark"), ("User-Agent", "probe/1")]),
        r("POST", "/echo", JSON, b'{"n": 1, "hostnames": ["a"]}'),
        r("POST", "/echo?id=9", [("Content-Type", "text/plain")], "héllo wörld".encode()),
        r("POST", "/echo", None, b""),
        r("POST", "/echo", [("Content-Type", "application/octet-stream")], BIG),
        _chunked_post("/echo?c=1", b"chunk one ", b"chunk two"),
        r("PUT", "/echo/item/7", JSON, b'{"v": 7}'),
        r("PUT", "/echo", None, os.urandom(5000)),
        r("DELETE", "/echo/item/7"),
        r("DELETE", "/rm-like", JSON, b'{"n": 3, "hostnames": ["S5", "S4"]}'),
        r("PATCH", "/echo", [("Content-Type", "text/plain")], b"patch"),
        r("OPTIONS", "/echo"),
        r("HEAD", "/echo"),
        r("HEAD", "/status/200?id=3"),
        r("HEAD", "/echo?id=%2F%3F%23", [("X-C-Head", "1")]),
        r("GET", "/status/200"),
        r("GET", "/status/201"),
        r("POST", "/status/202", None, b"accepted?"),
        r("GET", "/status/204"),
        r("GET", "/status/304"),
        r("GET", "/status/418"),
        r("GET", "/status/500"),
        r("DELETE", "/status/503"),
        r("GET", "/chunked?n=25"),
        r("POST", "/stream-echo", None, BIG[:100_000]),
        _chunked_post("/stream-echo", b"a" * 10_000, b"b" * 20_000),
    ]


def _comparable(resp: Response) -> tuple[object, ...]:
    headers = [
        (n.decode().lower(), v.decode("latin-1"))
        for n, v in resp.headers
        if n.decode().lower() not in IGNORED
    ]
    return (resp.status, resp.reason, headers, resp.body)


async def test_balancer_answers_like_the_replica(make_balancer: BalancerFactory) -> None:
    lb = await make_balancer(InProcessRuntime(echo_app), replicas=1)  # every key → that replica
    (handle,) = await lb.runtime.list()
    replica_port = int(handle.address.rpartition(":")[2])
    cases = _cases()
    assert len(cases) >= 30
    async with (
        await Client.open(replica_port) as direct,
        await Client.open(lb.service.port) as proxied,
    ):
        for raw, head in cases:
            await direct.send(raw)
            want = await direct.response(head_request=head)
            await proxied.send(raw)
            got = await proxied.response(head_request=head)
            label = raw.split(b"\r\n", 1)[0]
            assert _comparable(got) == _comparable(want), label
            assert got.chunked == want.chunked, label
            if want.body.startswith(b"{"):
                assert json.loads(got.body) == json.loads(want.body), label

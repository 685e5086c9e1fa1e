"""Python cost of one proxied request on the data path, without sockets or syscalls.

Usage: python bench/hotpath.py [N]
Feeds N keep-alive requests through a real ClientConn/Exchange/UpstreamConn with in-memory
transports (one pooled upstream connection per replica) and prints µs per request. Syscalls and
the event loop are excluded on purpose: this isolates what our own code costs.
"""

from __future__ import annotations

import sys
import time

import uvloop

from balancer.config import Settings
from balancer.http.client import ClientConn
from balancer.http.frontend import Frontend
from balancer.http.keysource import RawKeyExtractor, parse_key_sources
from balancer.http.stats import TrafficStats
from balancer.http.upstream import UpstreamConn, UpstreamPool
from balancer.state.memory import InMemoryStore
from balancer.state.store import Replica
from balancer.state.view import RingView

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 24 Nov 2026 21:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 59\r\nConnection: keep-alive\r\n\r\n"
    b'{"message": "Hello from Server: 1", "status": "successful"}'
)


class FakeTransport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def writelines(self, parts: list[bytes]) -> None:
        self.written += 1

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 5000) if name == "peername" else None

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


async def main(n: int) -> None:
    store = InMemoryStore()
    replicas = [Replica(f"Server {i}", i, f"10.0.0.{i}:80") for i in (1, 2, 3)]
    await store.commit(replicas, expected_epoch=0)
    view = RingView(store, Settings().ring)
    await view.refresh()
    pool = UpstreamPool(connect_timeout_s=1.0)
    upstreams = {}
    for r in replicas:
        conn = UpstreamConn(pool, r.address)
        conn.connection_made(FakeTransport())  # type: ignore[arg-type]
        pool.give_back(conn, 0.0)
        upstreams[r.address] = conn
    keys = RawKeyExtractor(parse_key_sources(Settings().http.key_source))
    fe = Frontend(
        view,
        pool,
        TrafficStats(),
        keys,
        admin_address="unix:/x",
        retries=2,
    )
    client = ClientConn(fe)
    client.connection_made(FakeTransport())  # type: ignore[arg-type]
    ids = [str(100000 + (i * 7919) % 900000).encode() for i in range(n)]
    requests = [
        b"GET /home?id=%s HTTP/1.1\r\nHost: 127.0.0.1:9300\r\nX-Request-ID: %s\r\n\r\n" % (i, i)
        for i in ids
    ]
    started = time.perf_counter()
    for raw in requests:
        client.data_received(raw)
        ex = client.exchange
        assert ex is not None and ex.conn is not None
        ex.conn.data_received(RESPONSE)
    took = time.perf_counter() - started
    assert client.exchange is None
    print(f"{n} requests: {took / n * 1e6:.2f} µs of Python per request")


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))

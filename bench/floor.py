"""The floor under any uvloop proxy: copy bytes between paired sockets, nothing else.

Usage: python bench/floor.py PORT BACKEND[,BACKEND...]   (e.g. 9400 127.0.0.1:8001,...)
Each client connection gets its own upstream connection (round-robin over the backends) and
bytes are copied both ways: no parsing, routing, pooling, counting or timeouts. Its CPU per
request, measured by the same harness (`lb_bench.sh --cmd floor 9400 '... {PORT} {BACKENDS}'`),
is what the event loop and the 4 syscalls per request cost; the gap between it and the balancer
is what our features cost. Not a balancer: no consistent hashing, no HTTP awareness.
"""

from __future__ import annotations

import asyncio
import itertools
import sys

import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()


class _Client(asyncio.Protocol):
    backends: itertools.cycle[tuple[str, int]]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.upstream: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        host, port = next(self.backends)
        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_connection(lambda: _Upstream(self), host, port)
        self.upstream = upstream
        for data in self.pending:
            upstream.write(data)

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def main(port: int, backends: str) -> None:
    pairs = [b.rsplit(":", 1) for b in backends.split(",")]
    _Client.backends = itertools.cycle([(h, int(p)) for h, p in pairs])
    server = await asyncio.get_running_loop().create_server(_Client, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))

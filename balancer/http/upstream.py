"""Keep-alive connections to replicas: the protocol object and the per-address idle pool.

Owns ``UpstreamConn`` (an ``asyncio.Protocol`` that hands every event to the exchange currently
using it) and ``UpstreamPool`` (LIFO idle lists per address, connect with a timeout, idle expiry).
Addresses are ``host:port`` or ``unix:/path`` (the admin app).
Must not import: aiohttp, redis, docker, httptools.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
from typing import Protocol, cast

from balancer.http.framing import ResponseFramer

# The balancer's own lack of resources (descriptors, buffers, memory): a connection that fails
# with one of these says nothing about the replica it was for.
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def local_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: aiohttp wraps the OSError) is the balancer running
    out of a resource rather than a failure of the peer."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in LOCAL_ERRNOS:
            return True
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    return False


_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


def reset(transport: asyncio.Transport) -> None:
    """Close ``transport`` with a TCP reset: the peer sees an error, never a clean end (a
    close-delimited response cut short, or a request it must not complete)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


class UpstreamUser(Protocol):
    """What an upstream connection reports to (the exchange using it)."""

    def on_upstream_data(self, data: bytes) -> None: ...
    def on_upstream_lost(self, conn: UpstreamConn) -> None: ...
    def on_upstream_pause(self, paused: bool) -> None: ...


class UpstreamConn(asyncio.Protocol):
    __slots__ = (
        "address",
        "closed",
        "framer",
        "idle_since",
        "pool",
        "reset",
        "reused",
        "transport",
        "user",
    )

    def __init__(self, pool: UpstreamPool, address: str) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.user: UpstreamUser | None = None
        self.closed = False
        self.reused = False
        self.reset = False  # the connection ended in an error (a reset), not a clean close
        self.idle_since = 0.0
        self.framer = ResponseFramer()  # reused for every response on this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        user = self.user
        if user is None:  # bytes on an idle connection: the upstream is confused; drop it
            self.close()
            return
        user.on_upstream_data(data)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reset = exc is not None
        self.pool.forget(self)
        user, self.user = self.user, None
        if user is not None:
            user.on_upstream_lost(self)

    def pause_writing(self) -> None:
        if self.user is not None:
            self.user.on_upstream_pause(True)

    def resume_writing(self) -> None:
        if self.user is not None:
            self.user.on_upstream_pause(False)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close with a reset (see ``reset``)."""
        self.closed = True
        if self.transport is not None:
            reset(self.transport)


class UpstreamPool:
    """Idle keep-alive connections per address (see the module docstring)."""

    def __init__(
        self, *, connect_timeout_s: float, idle_timeout_s: float = 30.0, max_idle: int = 512
    ) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._max_idle = max_idle
        self._idle: dict[str, list[UpstreamConn]] = {}

    def take(self, address: str) -> UpstreamConn | None:
        """An idle open connection to ``address`` (most recently used first), or None."""
        idle = self._idle.get(address)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    def give_back(self, conn: UpstreamConn, now: float) -> None:
        """Park a connection whose last exchange completed cleanly."""
        conn.user = None
        if conn.closed:
            return
        idle = self._idle.setdefault(conn.address, [])
        if len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    def forget(self, conn: UpstreamConn) -> None:
        idle = self._idle.get(conn.address)
        if idle and conn in idle:
            idle.remove(conn)

    async def connect(self, address: str) -> UpstreamConn:
        """Open a new connection.

        Raises:
            OSError: refused, unreachable, …
            TimeoutError: not connected within the connect timeout.
        """
        loop = asyncio.get_running_loop()
        conn = UpstreamConn(self, address)
        async with asyncio.timeout(self._connect_timeout_s):
            if address.startswith("unix:"):
                await loop.create_unix_connection(lambda: conn, address[5:])
            else:
                host, _, port = address.rpartition(":")
                transport, _ = await loop.create_connection(lambda: conn, host, int(port))
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than the idle timeout."""
        cutoff = now - self._idle_timeout_s
        for idle in self._idle.values():
            while idle and idle[0].idle_since < cutoff:
                idle.pop(0).close()

    def drop_address(self, address: str) -> None:
        """Close every idle connection to an address that left the ring."""
        for conn in self._idle.pop(address, []):
            conn.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

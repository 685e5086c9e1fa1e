"""Replicas for the data-path tests.

``echo_app``: an aiohttp replica (for ``InProcessRuntime``) that reports what it received and
can stream, chunk, delay and answer any status. ``RawRuntime``: a ``ReplicaRuntime`` whose
replicas are tiny raw asyncio servers, for upstream behaviour at the wire level (stalls, garbage,
close-delimited bodies, connections closed while idle, …); heartbeats are answered for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from balancer.runtimes.base import Description, ReplicaHandle
from tests.http.wire import Request, read_request

# -- aiohttp echo replica ------------------------------------------------------------------

# Request headers a proxy changes on purpose; left out of the echo so that answers obtained
# directly and through the balancer can be compared.
PROXY_SET = frozenset({"x-forwarded-for", "connection", "keep-alive"})
SLOW_OUTCOMES = web.AppKey("slow_outcomes", list[str])


SERVER_ID = web.AppKey("server_id", str)


async def _echo(request: web.Request) -> web.StreamResponse:
    server_id = request.app[SERVER_ID]
    if delay := request.query.get("delay"):
        await asyncio.sleep(float(delay))
    body = await request.read()
    info: dict[str, object] = {}
    if "port" in request.query and request.transport is not None:
        info["upstream_port"] = request.transport.get_extra_info("peername")[1]
    return web.json_response(
        {
            "id": server_id,
            "method": request.method,
            "path_qs": request.raw_path,
            "version": f"{request.version.major}.{request.version.minor}",
            "headers": [
                [k.lower(), v] for k, v in request.headers.items() if k.lower() not in PROXY_SET
            ],
            "body": body.decode("utf-8", "replace"),
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            **info,
        },
        headers={
            "X-Replica": server_id,
            "Cache-Control": "no-store",
            "ETag": '"' + hashlib.sha256(body).hexdigest()[:16] + '"',
        },
    )


async def _stream_echo(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"X-Replica": request.app[SERVER_ID]})
    await resp.prepare(request)
    async for piece in request.content.iter_chunked(256 * 1024):
        await resp.write(piece)
    await resp.write_eof()
    return resp


async def _chunked_answer(request: web.Request) -> web.StreamResponse:
    count = int(request.query.get("n", "5"))
    resp = web.StreamResponse(
        headers={"Content-Type": "text/plain", "X-Replica": request.app[SERVER_ID]}
    )
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(count):
        await resp.write(f"part {i};".encode())
        await asyncio.sleep(0.001)
    await resp.write_eof()
    return resp


async def _status(request: web.Request) -> web.Response:
    server_id = request.app[SERVER_ID]
    code = int(request.match_info["code"])
    if code in (204, 304):
        return web.Response(status=code, headers={"X-Replica": server_id, "ETag": '"v1"'})
    return web.Response(status=code, text=f"status {code} from {server_id}")


async def _slow_big(request: web.Request) -> web.StreamResponse:
    outcomes = request.app[SLOW_OUTCOMES]
    resp = web.StreamResponse(headers={"Content-Length": str(64 * 1024 * 2000)})
    await resp.prepare(request)
    try:
        for _ in range(2000):  # 125 MiB at most, 2000 × 2 ms: ends long after the client
            await resp.write(b"x" * 64 * 1024)
            await asyncio.sleep(0.002)
    except BaseException as exc:
        outcomes.append(type(exc).__name__)
        raise
    outcomes.append("completed")
    return resp


async def _nowhere(request: web.Request) -> web.Response:
    raise web.HTTPNotFound()


def echo_app(server_id: str) -> web.Application:
    """``/echo`` (any other path too): JSON of the request; ``/stream-echo``: the body streamed
    back; ``/chunked?n=``: a chunked answer; ``/status/<code>``; ``/slow-big``: a large slow
    answer (how it ended goes to ``app[SLOW_OUTCOMES]``); ``/nowhere``: 404. On ``/echo``,
    ``?delay=<s>`` delays the answer and ``?port`` adds the peer's port (the balancer's side
    of the upstream connection)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SERVER_ID] = server_id
    app[SLOW_OUTCOMES] = []
    app.router.add_route("*", "/stream-echo", _stream_echo)
    app.router.add_get("/chunked", _chunked_answer)
    app.router.add_route("*", "/status/{code:\\d+}", _status)
    app.router.add_get("/slow-big", _slow_big)
    app.router.add_route("*", "/nowhere", _nowhere)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


# -- raw replicas --------------------------------------------------------------------------

Handler = Callable[[str, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

HEARTBEAT_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


async def requests(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> AsyncIterator[Request]:
    """The requests of one connection, heartbeats answered here, until the peer closes."""
    while (req := await read_request(reader)) is not None:
        if req.path == b"/heartbeat":
            writer.write(HEARTBEAT_OK)
            continue
        yield req


def ok(body: bytes, *extra: bytes) -> bytes:
    """A 200 with Content-Length (extra header lines without CRLF)."""
    head = b"".join(line + b"\r\n" for line in extra)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), head, body)


def recorder(answer: bytes = b"recorded") -> tuple[Handler, list[Request]]:
    """A raw replica handler that keeps every request it receives and answers 200."""
    seen: list[Request] = []

    async def handler(server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        async for req in requests(r, w):
            seen.append(req)
            w.write(ok(answer))

    return handler, seen


class _RawReplica:
    def __init__(self, handle: ReplicaHandle, server: asyncio.Server) -> None:
        self.handle = handle
        self.server = server
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0  # accepted so far (heartbeat probes included)


class RawRuntime:
    """A ``ReplicaRuntime`` serving ``handler(server_id, reader, writer)`` per connection."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._replicas: dict[str, _RawReplica] = {}

    async def spawn(self, name: str, server_id: str) -> ReplicaHandle:
        replica: _RawReplica | None = None

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert replica is not None
            task = asyncio.current_task()
            assert task is not None
            replica.tasks.add(task)
            replica.writers.add(writer)
            replica.connections += 1
            try:
                await self._handler(server_id, reader, writer)
                await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            except asyncio.CancelledError:
                # Stopped: end quietly (the streams callback logs a cancelled task's end).
                pass
            finally:
                replica.tasks.discard(task)
                replica.writers.discard(writer)
                writer.close()

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        replica = _RawReplica(ReplicaHandle(name, server_id, f"127.0.0.1:{port}"), server)
        self._replicas[name] = replica
        return replica.handle

    def connections(self, name: str) -> int:
        return self._replicas[name].connections

    async def stop(self, name: str, *, force: bool = False) -> None:
        replica = self._replicas.pop(name, None)
        if replica is None:
            return
        replica.server.close()
        for writer in list(replica.writers):
            writer.transport.abort()
        tasks = list(replica.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(replica.server.wait_closed(), 2.0)

    crash = stop

    async def list(self) -> list[ReplicaHandle]:
        return [r.handle for r in self._replicas.values()]

    async def adopt(self, handle: ReplicaHandle) -> bool:
        return handle.name in self._replicas  # its replicas live in this test's loop only

    def describe(self, handle: ReplicaHandle) -> Description:
        return {}

    async def release(self) -> None:
        """Replicas live in the test's loop: nothing to hand over; the test closes them."""

    async def close(self) -> None:
        for name in list(self._replicas):
            await self.stop(name)

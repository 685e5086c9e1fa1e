"""Raw HTTP/1.x on asyncio streams, for tests that care about the exact bytes.

Client side: ``Client`` (one TCP connection to the balancer or a replica), ``request_bytes`` and
``read_response`` (status line, headers, body delimited by Content-Length, chunked coding or the
close). Server side: ``read_request`` (what a raw replica received, byte for byte).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

IO_TIMEOUT_S = 5.0

Headers = list[tuple[bytes, bytes]]


def _parse_fields(lines: list[bytes]) -> Headers:
    fields: Headers = []
    for line in lines:
        name, sep, value = line.partition(b":")
        assert sep, f"bad header line {line!r}"
        fields.append((name, value.strip()))
    return fields


def _get(fields: Headers, name: str) -> list[str]:
    key = name.lower().encode()
    return [v.decode("latin-1") for n, v in fields if n.lower() == key]


@dataclass
class Response:
    version: bytes
    status: int
    reason: bytes
    headers: Headers
    body: bytes = b""
    chunked: bool = False  # the body came with chunked coding
    close_delimited: bool = False  # no length: the body ran until the connection closed
    trailers: Headers = field(default_factory=list)
    interim: list[Response] = field(default_factory=list)  # 1xx responses before this one

    def get(self, name: str) -> str | None:
        values = _get(self.headers, name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return _get(self.headers, name)

    def has(self, name: str) -> bool:
        return bool(_get(self.headers, name))

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Request:
    method: bytes
    target: bytes  # the request target exactly as received
    version: bytes
    headers: Headers
    head: bytes  # the whole head, request line to blank line
    body: bytes = b""
    chunked: bool = False

    @property
    def path(self) -> bytes:
        return self.target.split(b"?", 1)[0]

    def get(self, name: str) -> str | None:
        values = _get(self.headers, name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return _get(self.headers, name)

    def names(self) -> set[str]:
        return {n.decode().lower() for n, _ in self.headers}


def request_bytes(
    method: str,
    target: str | bytes,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    version: str = "1.1",
    host: str | None = "test.local",
) -> bytes:
    """A request head (+ body with Content-Length unless headers say chunked)."""
    target_b = target.encode() if isinstance(target, str) else target
    lines = [b"%s %s HTTP/%s" % (method.encode(), target_b, version.encode())]
    names = {n.lower() for n, _ in headers or []}
    if host is not None and "host" not in names:
        lines.append(b"Host: " + host.encode())
    lines += [f"{n}: {v}".encode("latin-1") for n, v in headers or []]
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def chunked(*pieces: bytes, trailers: bytes = b"") -> bytes:
    """A chunked body of ``pieces`` (empty pieces are skipped: one would end the body)."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return out + b"0\r\n" + trailers + b"\r\n"


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def _read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, Headers]:
    parts: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line[:-2].split(b";", 1)[0].strip(), 16)
        if size == 0:
            break
        parts.append(await reader.readexactly(size))
        assert await reader.readexactly(2) == b"\r\n", "chunk data not followed by CRLF"
    trailer_lines = []
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        trailer_lines.append(line[:-2])
    return b"".join(parts), _parse_fields(trailer_lines)


async def _read_one(reader: asyncio.StreamReader, *, head_request: bool) -> Response:
    head = await _read_head(reader)
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    assert version in (b"HTTP/1.0", b"HTTP/1.1"), f"bad status line {lines[0]!r}"
    resp = Response(version, int(code), reason, _parse_fields(lines[1:]))
    coding = (resp.get("transfer-encoding") or "").lower()
    length = resp.get("content-length")
    if head_request or 100 <= resp.status < 200 or resp.status in (204, 304):
        return resp
    if coding:
        assert coding.replace(" ", "").endswith("chunked"), f"unexpected coding {coding!r}"
        resp.chunked = True
        resp.body, resp.trailers = await _read_chunked(reader)
    elif length is not None:
        resp.body = await reader.readexactly(int(length))
    else:
        resp.close_delimited = True
        resp.body = await reader.read()
    return resp


async def read_response(
    reader: asyncio.StreamReader,
    *,
    head_request: bool = False,
    stop_at_interim: bool = False,
    limit_s: float = IO_TIMEOUT_S,
) -> Response:
    """The next response; 1xx interim responses are collected in ``interim`` unless
    ``stop_at_interim`` returns the first one."""
    async with asyncio.timeout(limit_s):
        interim: list[Response] = []
        while True:
            resp = await _read_one(reader, head_request=head_request)
            if 100 <= resp.status < 200 and resp.status != 101:
                if stop_at_interim:
                    return resp
                interim.append(resp)
                continue
            resp.interim = interim
            return resp


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on a replica's connection; None at a clean EOF between requests."""
    try:
        head = await _read_head(reader)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    lines = head[:-4].split(b"\r\n")
    method, target, version = lines[0].split(b" ")
    req = Request(method, target, version, _parse_fields(lines[1:]), head)
    coding = (req.get("transfer-encoding") or "").lower()
    if coding:
        assert coding.replace(" ", "").endswith("chunked"), f"unexpected coding {coding!r}"
        req.chunked = True
        req.body, _ = await _read_chunked(reader)
    elif (length := req.get("content-length")) is not None:
        req.body = await reader.readexactly(int(length))
    return req


class Client:
    """One raw connection; ``async with await Client.open(port) as c: ...``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> Client:
        async with asyncio.timeout(IO_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        async with asyncio.timeout(IO_TIMEOUT_S):
            await self.writer.drain()

    async def response(self, **kwargs: Any) -> Response:
        return await read_response(self.reader, **kwargs)

    async def request(
        self,
        method: str,
        target: str | bytes,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        version: str = "1.1",
        host: str | None = "test.local",
        limit_s: float = IO_TIMEOUT_S,
    ) -> Response:
        await self.send(
            request_bytes(method, target, headers=headers, body=body, version=version, host=host)
        )
        return await self.response(head_request=method == "HEAD", limit_s=limit_s)

    async def closed_by_peer(self, limit_s: float = 2.0) -> bool:
        """True when the peer closes (EOF or reset) within ``limit_s`` without sending more."""
        try:
            async with asyncio.timeout(limit_s):
                data = await self.reader.read(1)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        assert data == b"", f"unexpected bytes instead of a close: {data!r}"
        return True

    def abort(self) -> None:
        """Close abruptly (RST), as a client that gives up mid-response."""
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(IO_TIMEOUT_S):
                await self.writer.wait_closed()
        except (ConnectionError, TimeoutError):
            pass

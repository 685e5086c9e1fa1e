"""A raw replica that records every byte it receives and parses it with a strict reference
parser (h11), for the request-smuggling corpus (``test_smuggling``).

Owns ``RecordingBackend`` (a ``RawRuntime`` handler, or its own server for a balancer process)
and ``head_problems`` (what a strict server refuses in a request head that h11 tolerates: bare
CR or LF, obs-fold, control bytes, repeated or non-canonical framing fields, hop-by-hop fields).
Each complete request gets a global sequence number and a 200 that names it (``X-Recorded:
<seq>``, body ``recorded <seq> <method> <target>``), so a client can tell an answer of the
backend from one of the balancer. A request h11 refuses is a framing violation: recorded,
answered 400 with ``X-Recorded: violation``, and the connection closed. ``GET /heartbeat``
without X-Forwarded-For (the health checker, never a forwarded request) is answered and not
recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field

import h11

MARKER = "x-recorded"
READ_BYTES = 65_536
# The balancer's head limit is 32 KiB: a strict parser must not refuse what it may forward.
MAX_HEAD_BYTES = 64 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    }
)
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass
class Seen:
    """One request as the backend parsed it (``done``: its whole body arrived)."""

    conn: int
    method: str
    target: str
    headers: list[tuple[str, str]]  # lower-case names, values as h11 parsed them
    head: bytes  # the raw head, request line to blank line
    body: bytes = b""
    seq: int = 0
    done: bool = False

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


@dataclass
class ConnRecord:
    """What one upstream connection carried."""

    id: int
    raw: bytearray = field(default_factory=bytearray)
    requests: list[Seen] = field(default_factory=list)  # complete ones, heartbeats left out
    partial: Seen | None = None  # a head that arrived without the rest of its message
    violation: str | None = None  # what h11 refused
    ended: bool = False  # the balancer closed or reset it
    leftover: bytes = b""  # bytes past the last complete request that formed no head
    mark: int = 0  # where in ``raw`` the record starts (``RecordingBackend.reset``)

    @property
    def heartbeats_only(self) -> bool:
        return not self.requests and self.partial is None and self.violation is None


def head_problems(head: bytes) -> list[str]:
    """What a strict HTTP/1.1 server refuses in a forwarded request head and h11 does not."""
    if not head.endswith(b"\r\n\r\n"):
        return ["head does not end in CRLF CRLF"]
    lines = head[:-4].split(b"\r\n")
    problems = [f"bare CR or LF in {line!r}" for line in lines if b"\r" in line or b"\n" in line]
    problems += [f"control byte in {line!r}" for line in lines if _CTL.search(line)]
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        problems.append(f"request line {lines[0]!r}")
    names: list[str] = []
    for line in lines[1:]:
        name, colon, _ = line.partition(b":")
        if line[:1] in (b" ", b"\t"):
            problems.append(f"obs-fold line {line!r}")
        elif not colon or _TOKEN.fullmatch(name) is None:
            problems.append(f"bad field line {line!r}")
        names.append(name.decode("latin-1").lower())
    problems += _framing_problems(names, lines[1:])
    return problems


def _framing_problems(names: list[str], lines: list[bytes]) -> list[str]:
    problems = [
        f"{n} x{names.count(n)}" for n in ("host", "x-forwarded-for") if names.count(n) != 1
    ]
    problems += [
        f"{n} repeated" for n in ("content-length", "transfer-encoding") if names.count(n) > 1
    ]
    if "content-length" in names and "transfer-encoding" in names:
        problems.append("both Content-Length and Transfer-Encoding")
    problems += [f"hop-by-hop field {n}" for n in sorted(HOP_BY_HOP & set(names))]
    for name, line in zip(names, lines, strict=True):
        value = line.partition(b":")[2].strip(b" \t")
        if name == "content-length" and not value.isdigit():
            problems.append(f"Content-Length {value!r}")
        if name == "transfer-encoding" and value != b"chunked":
            problems.append(f"Transfer-Encoding {value!r}")
    return problems


class RecordingBackend:
    """Every connection's bytes and parsed requests; ``handler`` serves one connection."""

    def __init__(self) -> None:
        self.conns: list[ConnRecord] = []
        self.last_byte_at = time.monotonic()
        self._seq = 0
        self._conn_ids = 0

    def reset(self) -> None:
        """Start a fresh record on the clean connections still open (the balancer keeps them
        in its pool): their requests so far are forgotten, their bytes so far left out."""
        self.conns = [
            c
            for c in self.conns
            if not c.ended and c.violation is None and c.partial is None and not c.leftover
        ]
        for conn in self.conns:
            conn.requests.clear()
            conn.mark = len(conn.raw)

    def requests(self) -> list[Seen]:
        """Every complete, non-heartbeat request, in the order they completed."""
        return sorted((r for c in self.conns for r in c.requests), key=lambda r: r.seq)

    async def settle(self, quiet_s: float = 0.05, limit_s: float = 2.0) -> None:
        """Wait until no byte arrived for ``quiet_s`` (at most ``limit_s``)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            wait_s = self.last_byte_at + quiet_s - time.monotonic()
            if wait_s <= 0:
                return
            await asyncio.sleep(wait_s)

    async def handler(
        self, server_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one connection (the ``RawRuntime`` handler signature)."""
        self._conn_ids += 1
        record = ConnRecord(self._conn_ids)
        self.conns.append(record)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        try:
            await self._serve(record, conn, reader, writer)
        except h11.RemoteProtocolError as exc:
            record.violation = f"h11: {exc}"
            writer.write(
                b"HTTP/1.1 400 Bad Request\r\nX-Recorded: violation\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n"
            )
        finally:
            record.leftover = bytes(conn.trailing_data[0])

    async def serve_forever(self, host: str = "127.0.0.1") -> asyncio.Server:
        """Listen on its own ephemeral port (for a balancer in another process)."""

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                try:
                    await self.handler("recorder", reader, writer)
                    await writer.drain()
                finally:
                    writer.close()

        return await asyncio.start_server(on_connection, host, 0)

    async def _serve(
        self,
        record: ConnRecord,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        consumed = 0  # raw bytes h11 has turned into events
        while True:
            try:
                data = await reader.read(READ_BYTES)
            except ConnectionError:
                data = b""
            self.last_byte_at = time.monotonic()
            if not data:
                record.ended = True
                return
            record.raw += data
            conn.receive_data(data)
            consumed = self._events(record, conn, writer, consumed)
            record.leftover = bytes(conn.trailing_data[0])
            if conn.our_state is h11.MUST_CLOSE:  # it asked for a close: not a data-path request
                record.ended = True
                return

    def _events(
        self, record: ConnRecord, conn: h11.Connection, writer: asyncio.StreamWriter, consumed: int
    ) -> int:
        while True:
            event = conn.next_event()
            now = len(record.raw) - len(conn.trailing_data[0])
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return now
            if isinstance(event, h11.Request):
                record.partial = Seen(
                    record.id,
                    event.method.decode("latin-1"),
                    event.target.decode("latin-1"),
                    [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers],
                    bytes(record.raw[consumed:now]),
                )
            elif isinstance(event, h11.Data) and record.partial is not None:
                record.partial.body += event.data
            elif isinstance(event, h11.EndOfMessage) and record.partial is not None:
                self._answer(record, conn, writer)
                if conn.our_state is h11.MUST_CLOSE:
                    return now
            consumed = now

    def _answer(
        self, record: ConnRecord, conn: h11.Connection, writer: asyncio.StreamWriter
    ) -> None:
        seen, record.partial = record.partial, None
        assert seen is not None
        seen.done = True
        if seen.target == "/heartbeat" and not seen.all("x-forwarded-for"):
            body, marker = b"", "heartbeat"
        else:
            self._seq += 1
            seen.seq = self._seq
            record.requests.append(seen)
            body = f"recorded {seen.seq} {seen.method} {seen.target}".encode("latin-1")
            marker = str(seen.seq)
        headers = [("Content-Length", str(len(body))), ("X-Recorded", marker)]
        writer.write(conn.send(h11.Response(status_code=200, headers=headers)) or b"")
        if seen.method != "HEAD":  # a HEAD answer has the length of the body it does not send
            writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()

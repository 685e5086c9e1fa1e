"""One client connection of the data path: requests parsed with httptools.

Owns ``ClientConn`` (an ``asyncio.Protocol`` per client connection: parses requests, builds the
upstream request head, runs one ``Exchange`` at a time and queues pipelined ones, answers
malformed requests, enforces the timeout of the state it is in, closes with a lingering close).
The rules of a request head (limits, framing, targets, fields) are ``balancer.http.request_head``.
A complete, bodiless HTTP/1.1 head of at most 8000 bytes in origin-form with one Host and
without hop-by-hop fields takes ``_fast_path`` (forwarded as received plus X-Forwarded-For);
everything else takes the full per-field path, which enforces the limits: 400 for what llhttp
refuses, HTTP/0.9 and a missing or repeated Host; 414 for a request target over 8000 bytes; 431
for a field line over 8000 bytes, more than 100 field lines or a head over 32 KiB; 501 for a
transfer coding other than chunked; every answer in the contract's error shape, then close.
An exchange starts only once every byte that came with its head parsed cleanly. A client's
FIN ends its connection and gives up what it asked (nginx's default: a client that gave up
costs its replica nothing more).
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from typing import TYPE_CHECKING, cast

import httptools

from balancer.http.exchange import Exchange
from balancer.http.request_head import (
    ADMIN_PREFIXES,
    CALLBACK_STATUS,
    CAPTURE,
    DROP,
    HOST,
    LENGTH,
    LIST,
    MAX_FIELD_BYTES,
    MAX_FIELDS,
    MAX_TARGET_BYTES,
    NEEDS_FULL_PATH,
    NEVER_NAMED,
    SPOOFS_XFF,
    VALID_HOST_LINE,
    WORKER_ONLY,
    XFF,
    HeadTooLarge,
    MalformedHead,
    check_framing,
    check_size,
    header_actions,
    is_admin,
    origin_form,
    valid_host,
)
from balancer.http.upstream import reset
from balancer.wire import error_body

if TYPE_CHECKING:
    from balancer.http.frontend import Frontend

log = logging.getLogger(__name__)

__all__ = ["MAX_FIELDS", "WORKER_ONLY", "ClientConn", "header_actions", "is_admin"]

REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
_FAST_PATH_MAX = min(MAX_TARGET_BYTES, MAX_FIELD_BYTES)  # no line of a shorter head is too long
_FEW_FIELDS_MAX = 4 * MAX_FIELDS  # a shorter head has at most MAX_FIELDS lines ("a:" CRLF)
LINGER_S = 2.0  # how long a closing connection drains what the client still sends


class _Validator:
    """Parser callbacks for validating a fast-path head: only completion matters."""

    __slots__ = ("complete",)

    def __init__(self) -> None:
        self.complete = False

    def on_message_complete(self) -> None:
        self.complete = True


class _BodyOnly:
    """Parser callbacks that pass on one request body (after a refused Upgrade) and nothing
    else: a synthetic head puts llhttp in the body's framing; bytes after it are dropped."""

    __slots__ = ("conn", "done")

    def __init__(self, conn: ClientConn) -> None:
        self.conn = conn
        self.done = False

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.conn.on_body(body)

    def on_message_complete(self) -> None:
        if not self.done:
            self.done = True
            self.conn.on_message_complete()


class _Discard(list[bytes]):
    """A list that keeps nothing: where the trailer fields of a chunked request go."""

    def append(self, item: bytes) -> None:
        pass


_DISCARD = _Discard()


class ClientConn(asyncio.Protocol):
    PAUSE_PIPELINE = 1
    PAUSE_UPSTREAM = 2
    PAUSE_CONNECTING = 4

    __slots__ = (
        "_between",
        "_captured",
        "_chunked",
        "_chunks",
        "_head_bytes",
        "_headers",
        "_host_at",
        "_mark",
        "_mark_at",
        "_parsing",
        "_paused",
        "_unlisted",
        "_upgrade_framing",
        "_url",
        "_validator",
        "_validator_state",
        "_xff",
        "_xff_line",
        "closed",
        "exchange",
        "fe",
        "head_started",
        "idle_since",
        "keys",
        "linger_until",
        "parser",
        "peer",
        "pending_error",
        "progress",
        "queue",
        "transport",
        "write_paused",
    )

    def __init__(self, fe: Frontend) -> None:
        self.fe = fe
        self.keys = fe.keys
        self.parser = httptools.HttpRequestParser(self)
        self._validator_state = _Validator()
        self._validator = httptools.HttpRequestParser(self._validator_state)
        self._between = True  # the full parser is between messages
        self.exchange: Exchange | None = None
        self.queue: collections.deque[Exchange] = collections.deque()
        self.closed = False
        self.write_paused = False
        self.pending_error = 0  # a 400/431 to answer once the response in progress is done
        self._paused = 0
        self._parsing: Exchange | None = None
        self._url = b""
        self._headers: list[bytes] = []
        self._host_at = -1  # index of the Host line in _headers
        self._upgrade_framing = b""  # the body framing of an Upgrade request (see _feed)
        self._chunks: list[bytes] = []  # body pieces of a chunked request, from one read
        self.linger_until = 0.0  # closing after an answer: when to stop draining the client
        self._captured: dict[bytes, bytes] = {}
        self._xff: bytes | None = None
        self._chunked = False
        self._head_bytes = 0
        self._unlisted = 0  # field lines of the head not kept in _headers
        self.head_started = 0.0
        self.idle_since = fe.loop.time()
        # Bytes moved on behalf of the exchange in progress, in either direction on either side
        # (a count, cheaper than a clock read per event); the sweeper notes when it last moved.
        self.progress = 0
        self._mark = 0
        self._mark_at = self.idle_since

    # -- connection events -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        fe = self.fe
        if len(fe.connections) >= fe.max_connections:  # maxconn: refused before any read
            self.closed = True
            fe.stats.refused_connections += 1
            reset(self.transport)
            return
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self._xff_line = b"X-Forwarded-For: %s\r\n" % self.peer.encode()
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fe.connections.add(self)
        self.fe.stats.client_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed and self not in self.fe.connections:
            return  # refused by connection_made
        self.closed = True
        self.fe.connections.discard(self)
        self.fe.stats.client_connections -= 1
        if self.exchange is not None:
            self.exchange.abandon()
            self.exchange = None
        for queued in self.queue:
            queued.abandon()
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        if self.linger_until:  # answered and closing: what the client still sends is dropped
            return
        if (
            self._between
            and self.exchange is None
            and data.endswith(b"\r\n\r\n")
            and data.find(b"\r\n\r\n") == len(data) - 4
            and self._fast_path(data)
        ):
            return
        self._feed(data)
        if self._chunks:
            self._flush_chunks()
        ex = self.exchange
        if ex is not None and not ex.launched:
            ex.start()

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
            if self.head_started:  # a head is still arriving: bound what it may take
                self._head_bytes += len(data)
                if self._head_bytes > self.fe.max_head_bytes:
                    self._protocol_error(431)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade_refused(data[exc.args[0] :] if exc.args else b"")
        except httptools.HttpParserCallbackError as exc:
            # httptools chains what the callback raised
            cause = exc.__context__
            self._protocol_error(400 if cause is None else CALLBACK_STATUS.get(type(cause), 400))
        except httptools.HttpParserError:
            self._protocol_error(400)

    def _upgrade_refused(self, rest: bytes) -> None:
        """Upgrade is not proxied (its fields are hop-by-hop and dropped): the request is
        answered as a plain one, then the connection closes. llhttp stops at the head of an
        Upgrade request; a body it declares follows in ``rest`` and is parsed by a parser that
        sees only that body, so the replica gets exactly the body the head announced."""
        if self._parsing is not None:
            self._parsing.keep_alive = False
        framing, self._upgrade_framing = self._upgrade_framing, b""
        self.pause_reading(self.PAUSE_PIPELINE)
        if framing:
            self.parser = httptools.HttpRequestParser(_BodyOnly(self))
            self._feed(b"POST / HTTP/1.1\r\nHost: -\r\n%s\r\n\r\n%s" % (framing, rest))

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.exchange
        if ex is not None and ex.conn is not None and ex.conn.transport is not None:
            ex.conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.progress += 1  # the client reads the response
        ex = self.exchange
        if ex is not None and ex.conn is not None and ex.conn.transport is not None:
            ex.conn.transport.resume_reading()

    def pause_reading(self, reason: int) -> None:
        if not self._paused and not self.closed:
            self.transport.pause_reading()
        self._paused |= reason

    def resume_reading(self, reason: int) -> None:
        was = self._paused
        self._paused &= ~reason
        if was and not self._paused and not self.closed:
            self.transport.resume_reading()

    # -- httptools callbacks ---------------------------------------------------------------

    def _fast_path(self, data: bytes) -> bool:
        """Handle one complete, bodiless HTTP/1.1 request head; False: use the full path."""
        # Longer heads, or heads with many lines, go to the full path, which checks each limit.
        size = len(data)
        if size > _FAST_PATH_MAX or (
            size > _FEW_FIELDS_MAX and data.count(b"\r\n") > MAX_FIELDS + 2
        ):
            return False
        lower = data.lower()
        if NEEDS_FULL_PATH.search(lower) is not None:
            return False
        line_end = data.find(b"\r\n")
        if data[line_end - 9 : line_end] != b" HTTP/1.1" or lower.count(b"\r\nhost:") != 1:
            return False  # no Host or several: the full path answers 400
        space = data.find(b" ")
        if data[space + 1] != 47 or VALID_HOST_LINE.search(lower) is None:
            return False  # not origin-form: the full path rewrites it; a bad Host: 400 there
        state = self._validator_state
        state.complete = False
        try:
            self._validator.feed_data(data)  # llhttp's checks, without per-field callbacks
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            # Malformed, or CONNECT (not an HttpParserError): the full path answers it.
            self._validator = httptools.HttpRequestParser(state)  # the old one is spent
            return False
        if not state.complete:
            return False
        method = data[:space]
        url = data[space + 1 : line_end - 9]
        captured = {}
        for name in self.keys.header_names:
            at = lower.find(b"\r\n" + name + b":")
            if at >= 0:
                start = at + len(name) + 3
                captured[name] = data[start : data.find(b"\r\n", start)].strip()
        admin = url.startswith(ADMIN_PREFIXES) and is_admin(url, method)
        ex = Exchange(
            self,
            data[:-2] + self._xff_line + b"\r\n",
            method,
            url,
            None if admin else self.keys.key(url, captured, self.peer),
            True,
            method == b"HEAD",
            False,
            False,
        )
        ex.request_done = True
        self.exchange = ex
        ex.start()
        return True

    def on_message_begin(self) -> None:
        self._between = False
        self._url = b""
        self._headers = []
        self._captured = {}
        self._xff = None
        self._chunked = False
        self._head_bytes = 0
        self._unlisted = 0
        self._host_at = -1
        self._upgrade_framing = b""
        self.head_started = self.fe.loop.time()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        action = self.fe.header_actions.get(lower)
        if action is None:  # the common case: forward as received
            if b"_" not in lower or lower not in SPOOFS_XFF:
                self._headers.append(b"%s: %s\r\n" % (name, value))
                return
            action = DROP
        if action in (HOST, LENGTH, CAPTURE):
            self._kept_field(name, lower, value, action)
            return
        if action == LIST:  # Connection / Transfer-Encoding: hop-by-hop, but needed
            # Repeated lines are one comma-joined list (RFC 9110 §5.3). llhttp accepts a
            # request coding list only when it ends in chunked.
            prior = self._captured.get(lower)
            value = value.lower() if prior is None else prior + b", " + value
            self._captured[lower] = value
            self._chunked = self._chunked or lower == b"transfer-encoding"
        elif action == XFF:
            value = value if self._xff is None else self._xff + b", " + value
            self._xff = value
        # else DROP: other hop-by-hop fields are not forwarded
        # Fields not kept in _headers (checked at the head's end) are counted and checked here.
        self._unlisted += 1
        if len(value) > MAX_FIELD_BYTES:
            raise HeadTooLarge

    def _kept_field(self, name: bytes, lower: bytes, value: bytes, action: int) -> None:
        """A field forwarded in place that the data path also reads."""
        if action == HOST:  # forward, remember, and refuse a second one or an invalid one
            if lower in self._captured or not valid_host(value):
                raise MalformedHead
            self._captured[lower] = value
            self._host_at = len(self._headers)
            self._headers.append(b"%s: %s\r\n" % (name, value))
            return
        if action == LENGTH:  # llhttp refuses a second one, and one with Transfer-Encoding
            if not value.isdigit():
                raise MalformedHead
            self._captured[lower] = value  # forwarded in place, its value canonical ("05" → 5)
            self._headers.append(b"%s: %d\r\n" % (name, int(value)))
            return
        # CAPTURE: a key source: forward and remember (the first, as the fast path does)
        self._captured.setdefault(lower, value)
        self._headers.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        url = self._url
        headers = self._headers
        check_size(url, headers, self._unlisted, self.fe.max_head_bytes)
        method = parser.get_method()
        version = parser.get_http_version()
        http10 = version == "1.0"
        if not http10 and (version != "1.1" or b"host" not in self._captured):
            raise MalformedHead  # HTTP/0.9; HTTP/1.1 without Host (RFC 9112 §3.2)
        check_framing(http10=http10, coding=self._captured.get(b"transfer-encoding"))
        if url[:1] != b"/":
            url = self._origin_form(method, url)
        head = self._build_head(method, url, headers, http10)
        admin = url.startswith(ADMIN_PREFIXES) and is_admin(url, method)
        ex = Exchange(
            self,
            head,
            method,
            url,
            None if admin else self.keys.key(url, self._captured, self.peer),
            # HTTP/1.0 responses may be de-chunked into a close-delimited body, and an Upgrade
            # is not proxied: both close after the answer.
            parser.should_keep_alive() and not http10 and not parser.should_upgrade(),
            method == b"HEAD",
            http10,
            self._chunked,
        )
        if b"upgrade" in self._captured.get(b"connection", b""):
            # llhttp flags the upgrade only after this callback (and then stops parsing)
            self._upgrade_framing = self._body_framing()
        self._parsing = ex
        self.head_started = 0.0
        self._headers = _DISCARD  # trailer fields (if any) are not forwarded: never kept
        if self.exchange is None:
            # Started by data_received once every byte that came with the head has parsed
            # cleanly: a request whose framing fails there never reaches a replica.
            self.exchange = ex
        else:
            self.queue.append(ex)
            self.pause_reading(self.PAUSE_PIPELINE)

    def _body_framing(self) -> bytes:
        """The field that frames the body of the head just parsed (empty: no body)."""
        if self._chunked:
            return b"Transfer-Encoding: chunked"
        if int(self._captured.get(b"content-length", b"0")):
            return b"Content-Length: " + self._captured[b"content-length"]
        return b""

    def _origin_form(self, method: bytes, url: bytes) -> bytes:
        """Rewrite a target that is not origin-form (``request_head.origin_form``); an
        absolute-form target's authority replaces the Host field (RFC 9112 §3.2.2)."""
        path, authority = origin_form(method, url)
        if authority is not None:
            host_line = b"Host: %s\r\n" % authority
            if self._host_at >= 0:
                self._headers[self._host_at] = host_line
            else:  # HTTP/1.0 without Host
                self._headers.append(host_line)
            self._captured[b"host"] = authority
        return path

    def _build_head(self, method: bytes, url: bytes, headers: list[bytes], http10: bool) -> bytes:
        captured = self._captured
        connection = captured.get(b"connection")
        if connection and connection not in (b"close", b"keep-alive"):
            # Fields named in Connection are hop-by-hop too (RFC 9110 §7.6.1), except those
            # that frame or address the request (a desync if the replica lost them).
            named = {t.strip() for t in connection.split(b",")} - NEVER_NAMED
            headers = [h for h in headers if h.split(b":", 1)[0].lower() not in named]
        xff = (
            self._xff_line
            if self._xff is None
            else b"X-Forwarded-For: %s, %s\r\n" % (self._xff, self.peer.encode())
        )
        extra = b""
        if http10 and b"host" not in captured:
            extra = b"Host: localhost\r\n"
        if self._chunked:  # the body is re-chunked on the way
            extra += b"Transfer-Encoding: chunked\r\n"
        return b"%s %s HTTP/1.1\r\n%s%s%s\r\n" % (method, url, b"".join(headers), xff, extra)

    def on_body(self, body: bytes) -> None:
        # Body bytes are the client's progress (what it sends besides them, such as empty lines
        # or chunk extensions, is not: it must not hold a connection open).
        self.progress += 1
        ex = self._parsing
        if ex is None:
            return
        if ex.chunked:  # the chunks of one read go upstream as one chunk (_flush_chunks)
            self._chunks.append(body)
        else:
            ex.send_body(body)

    def _flush_chunks(self) -> None:
        """Send the body pieces of a chunked request gathered from one read as one chunk: a
        client's thousands of 1-byte chunks cost one write, not thousands."""
        body = b"".join(self._chunks)
        self._chunks.clear()
        ex = self._parsing
        if ex is not None:  # else the request was refused meanwhile: its body goes nowhere
            ex.send_body(b"%x\r\n%s\r\n" % (len(body), body))

    def on_message_complete(self) -> None:
        if self._upgrade_framing and self.parser.should_upgrade():
            return  # llhttp ends an Upgrade request at its head: its body follows (_feed)
        if self._chunks:
            self._flush_chunks()
        self._between = True
        ex = self._parsing
        self._parsing = None
        if ex is not None:
            if ex.chunked:
                ex.send_body(b"0\r\n\r\n")
            ex.request_done = True
            if ex.response_done and ex is self.exchange:
                self._advance(ex)

    # -- exchange lifecycle ----------------------------------------------------------------

    def exchange_finished(self, ex: Exchange) -> None:
        """The response of ``ex`` is complete; move on once its request is complete too (until
        then the rest of its body is read and dropped, for at most the client timeout)."""
        ex.response_done = True
        if ex is self.exchange:
            if ex.request_done or not ex.keep_alive:
                self._advance(ex)
            else:  # drain the body: no replica reads it any more
                self.idle_since = self.fe.loop.time()  # when the drain began
                self.resume_reading(self.PAUSE_UPSTREAM | self.PAUSE_CONNECTING)

    def _advance(self, ex: Exchange) -> None:
        self.exchange = None
        self.idle_since = self.fe.loop.time()
        self.progress += 1  # the next exchange's stall is counted from now
        if not ex.keep_alive or not ex.request_done or self.closed:
            self.close_lingering()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.exchange = nxt
            if not self.queue:
                self.resume_reading(self.PAUSE_PIPELINE)
            nxt.start()
        elif self.pending_error:
            self._protocol_error(self.pending_error)
        elif self._paused & self.PAUSE_PIPELINE:
            self.resume_reading(self.PAUSE_PIPELINE)

    def write_error(
        self, status: int, message: str, *, head_only: bool = False, close: bool = False
    ) -> None:
        """An error answer in the contract's JSON shape (head only for a HEAD request;
        ``Connection: close`` when the connection ends after it)."""
        body = error_body(message)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (
                status,
                REASONS.get(status, b"Error"),
                len(body),
                b"Connection: close\r\n" if close else b"",
                b"" if head_only else body,
            )
        )

    def _protocol_error(self, status: int) -> None:
        """Answer a malformed request and close (after any response still in progress)."""
        message = {
            431: "Request header fields too large",
            414: "Request target too long",
            408: "Request timeout",
            501: "Transfer coding not implemented",
        }.get(status, "Malformed HTTP request")
        bad = self._parsing
        if bad is not None and bad in self.queue:  # a queued request turned out malformed
            self.queue.remove(bad)
            bad.abandon()
        self._parsing = None
        ex = self.exchange
        if ex is not None and ex.request_done:  # a later pipelined request is malformed
            self.pending_error = status
            self.pause_reading(self.PAUSE_PIPELINE)
            return
        if ex is not None:  # the body of the request in progress is malformed: give it up
            self.exchange = None
            ex.abandon()
            if ex.relayed:  # its response is under way: a reset says it is cut short
                self.reset()
                return
        self.fe.stats.client_error(status)
        self.write_error(status, message, close=True)
        self.close_lingering()

    def reset(self) -> None:
        """End the connection with a TCP reset: the client must see an error (a response cut
        short), never a clean end."""
        self.closed = True
        reset(self.transport)

    def close_lingering(self) -> None:
        """Close after an answer without losing it: half-close, then read and drop what the
        client still sends for a while (RFC 9112 §9.6; nginx's lingering close). Closing at
        once, with its bytes unread, would send a reset that can destroy the answer before
        the client reads it."""
        if self.closed or self.linger_until:
            return
        self.linger_until = self.fe.loop.time() + LINGER_S
        self.resume_reading(self._paused)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()

    def check_timeouts(self, now: float) -> None:
        """Apply the timeout of the state this connection is in (``frontend.Timeouts``)."""
        timeouts = self.fe.timeouts
        if self.linger_until:
            if now > self.linger_until:
                self.transport.close()
            return
        ex = self.exchange
        if ex is None:
            if self.head_started and now - self.head_started > timeouts.header_s:
                self._protocol_error(408)
            elif not self.head_started and now - self.idle_since > timeouts.idle_s:
                self.transport.close()
            return
        if self.progress != self._mark:
            self._mark, self._mark_at = self.progress, now
        stalled_s = now - self._mark_at
        if self._waiting_on_client(ex):
            if stalled_s > timeouts.client_s or (
                ex.response_done and now - self.idle_since > timeouts.client_s
            ):
                self._client_timed_out(ex)
        elif ex.conn is not None and (
            stalled_s > timeouts.upstream_s
            or (timeouts.upstream_total_s and now - ex.started > timeouts.upstream_total_s)
        ):
            ex.timed_out()
        # else connecting: the pool's connect timeout applies

    def _waiting_on_client(self, ex: Exchange) -> bool:
        """Whether the exchange waits for the client (else for its replica): the client does
        not read the response, or its request body is due and the balancer is reading it."""
        return (
            self.write_paused
            or ex.response_done
            or not (ex.request_done or self._paused & (self.PAUSE_UPSTREAM | self.PAUSE_CONNECTING))
        )

    def _client_timed_out(self, ex: Exchange) -> None:
        """The client stopped sending its request, or reading the response."""
        self.exchange = None
        ex.abandon()
        if ex.response_done:  # an early answer went out; the rest of the body did not come
            self.transport.close()
        elif ex.relayed:  # part of the response went out: only a reset can say it is cut short
            self.reset()
        else:
            self.fe.stats.client_error(408)
            self.write_error(408, "Request timeout", close=True)
            self.transport.close()

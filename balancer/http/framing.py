"""Upstream response framing: where a response head ends, how its body is delimited, and when
the whole message has passed, so raw bytes can be relayed without re-serialising them.

Owns ``ResponseFramer`` (one per upstream connection, reset per response) and the hop-by-hop
header rules. Pure: bytes in, bytes out, no I/O.
Must not import: asyncio, aiohttp, httptools, redis, docker or other project modules.
"""

from __future__ import annotations

# RFC 9110 §7.6.1: connection-specific fields a proxy never forwards (lower case).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_HOP_MARKERS = tuple(b"\r\n" + name + b":" for name in HOP_BY_HOP if name != b"transfer-encoding")
_KEEP_ALIVE_LINE = b"\r\nConnection: keep-alive\r\n"
MAX_HEAD = 64 * 1024
MAX_INTERIM = 32  # 1xx responses before one final response (100 Continue, 103 Early Hints …)

# Framing decisions per distinct response head: replicas repeat the same head (only Date
# changes, once a second), so parsing it again per response is wasted work. One dict per
# (no_body, dechunk) combination; cleared when it grows past _CACHE_LIMIT (heads that carry
# per-response values, such as cookies, simply never hit).
_CACHE_LIMIT = 4096
_CACHE_HEAD_MAX = 2048  # bytes: bounds the cache at ~8 MB per dict
_CACHES: tuple[dict[bytes, tuple[int, int, int, bool, bytes]], ...] = ({}, {}, {}, {})

# Framer phases.
HEAD, LENGTH, CHUNKED, UNTIL_CLOSE, DONE = range(5)
# Chunk parser states.
_SIZE, _DATA, _DATA_CRLF, _TRAILER = range(4)


class FramingError(Exception):
    """The upstream sent something that is not a valid HTTP/1.1 response."""


class ResponseFramer:
    """Incremental framing of one upstream response at a time.

    ``feed(data)`` returns the bytes to relay to the client (the head rewritten only when it
    carries hop-by-hop fields; the body as received, or de-chunked for HTTP/1.0 clients).
    After the head: ``status``, ``reusable`` (the upstream connection may carry another request).
    ``phase == DONE`` once the message is complete; ``extra`` holds bytes past its end.
    """

    __slots__ = (
        "_buf",
        "_cache",
        "_chunk_left",
        "_chunk_state",
        "_dechunk",
        "_interims",
        "_no_body",
        "extra",
        "phase",
        "remaining",
        "reusable",
        "status",
    )

    def __init__(self) -> None:
        self.reset(False, False)

    def reset(self, no_body: bool, dechunk: bool) -> None:
        """Prepare for the next response. ``no_body``: the request was HEAD; ``dechunk``: the
        client speaks HTTP/1.0 (a chunked body is de-chunked, 1xx responses are not relayed)."""
        self._buf = b""
        self._no_body = no_body
        self._dechunk = dechunk
        self._cache = _CACHES[no_body * 2 + dechunk]
        self.phase = HEAD
        self.status = 0
        self.remaining = 0
        self.reusable = True
        self.extra = b""
        self._chunk_state = _SIZE
        self._chunk_left = 0
        self._interims = 0

    def feed(self, data: bytes) -> bytes:
        """Consume upstream bytes; return what to send to the client.

        Raises:
            FramingError: on a malformed head, oversized head or malformed chunked body.
        """
        if self.phase == HEAD:
            return self._feed_head(data)
        if self.phase == LENGTH:
            return self._feed_length(data)
        if self.phase == CHUNKED:
            return self._feed_chunked(data)
        if self.phase == UNTIL_CLOSE:
            return data
        self.extra += data
        return b""

    # -- head ------------------------------------------------------------------------------

    def _feed_head(self, data: bytes) -> bytes:
        if not self._buf:  # the common case: a whole head seen before, in one read
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                cached = self._cache.get(data[: end + 4])
                if cached is not None:  # _known_head, inlined: this runs for every response
                    self.status, phase, remaining, self.reusable, out = cached
                    rest = data[end + 4 :]
                    if phase == LENGTH and len(rest) == remaining:  # the whole response
                        self.phase = DONE
                        return out + rest
                    self.phase, self.remaining = phase, remaining
                    return self._after_head(out, rest)
        return self._heads(data)

    def _known_head(self, cached: tuple[int, int, int, bool, bytes], rest: bytes) -> bytes:
        """A head framed before (``_remember``), and what came after it."""
        self.status, phase, remaining, self.reusable, out = cached
        if phase == LENGTH and len(rest) == remaining:  # the whole response in one read
            self.phase = DONE
            return out + rest
        self.phase, self.remaining = phase, remaining
        return self._after_head(out, rest)

    def _heads(self, data: bytes) -> bytes:
        """Frame the heads in ``data``: interim ones (relayed, at most ``MAX_INTERIM``), then the
        final one; a loop, not a recursion, whatever a replica sends."""
        interim = b""  # 1xx heads relayed before the final one
        while True:
            split = self._split_head(data)
            if split is None:
                return interim
            head, rest = split
            cached = self._cache.get(head)
            if cached is not None:
                return interim + self._known_head(cached, rest)
            raw_head, head = head, self._frame(self._status_of(head))
            if self.status >= 200 or self.status == 101:
                self._remember(raw_head, head)
                return interim + self._after_head(head, rest)
            # Interim response: relay it (not to an HTTP/1.0 client: RFC 9110 §15.2) and frame
            # the final response that follows; a replica may not send them without end.
            self._interims += 1
            if self._interims > MAX_INTERIM:
                raise FramingError("too many interim responses")
            self.phase = HEAD
            if not self._dechunk:
                interim += head
            if not rest:
                return interim
            data = rest

    def _split_head(self, data: bytes) -> tuple[bytes, bytes] | None:
        """(a complete head, the bytes after it), or None: the head is still arriving."""
        buf = self._buf + data if self._buf else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise FramingError("response head too large")
            self._buf = buf
            return None
        if end + 4 > MAX_HEAD:
            raise FramingError("response head too large")
        self._buf = b""
        return buf[: end + 4], buf[end + 4 :]

    def _status_of(self, head: bytes) -> bytes:
        """``head``, once its status line is valid (``self.status`` set)."""
        code = head[9:12]
        if (
            not head.startswith(b"HTTP/1.")
            or not code.isdigit()
            or code[0] == 48  # "0xx" is not a status
            or head[12:13] not in b" \r"
        ):
            raise FramingError(f"bad status line {head[:40]!r}")
        self.status = int(code)
        return head

    def _after_head(self, head: bytes, rest: bytes) -> bytes:
        """The relayed head plus whatever of the body came with it."""
        if self.phase == DONE:
            self.extra = rest  # bytes past a bodiless response
            return head
        return head + self.feed(rest) if rest else head

    def _remember(self, raw_head: bytes, head: bytes) -> None:
        if len(raw_head) > _CACHE_HEAD_MAX:
            return
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[raw_head] = (self.status, self.phase, self.remaining, self.reusable, head)

    def _frame(self, head: bytes) -> bytes:
        """Decide the body framing from the head; return the head to relay."""
        lower = head.lower()
        http10 = head[5:8] == b"1.0"
        self.reusable = not http10 and self.status != 101
        if b"\r\nconnection:" in lower:
            value = _header_value(lower, b"connection")
            if b"close" in value:
                self.reusable = False
            elif http10 and b"keep-alive" in value:
                self.reusable = True
        coding = _header_value(lower, b"transfer-encoding")
        chunked = coding.endswith(b"chunked")
        if self._no_body or self.status in (204, 304) or 100 <= self.status < 200:
            self.phase = DONE
        elif chunked:
            self.phase = CHUNKED
        elif coding:  # a coding that does not end in chunked: the body runs until close
            self.phase = UNTIL_CLOSE
            self.reusable = False
        elif b"\r\ncontent-length:" in lower:
            value = _header_value(lower, b"content-length")
            if not value.isdigit():  # 1*DIGIT only: no sign, no underscores, no spaces
                raise FramingError(f"bad Content-Length {value[:20]!r}")
            self.remaining = int(value)
            self.phase = LENGTH if self.remaining else DONE
        else:
            self.phase = UNTIL_CLOSE
            self.reusable = False
        return strip_hop_by_hop(head, lower, keep_coding=bool(coding) and not self._dechunk)

    # -- bodies ----------------------------------------------------------------------------

    def _feed_length(self, data: bytes) -> bytes:
        if len(data) < self.remaining:
            self.remaining -= len(data)
            return data
        cut = self.remaining
        self.remaining = 0
        self.phase = DONE
        if cut < len(data):
            self.extra = data[cut:]
            return data[:cut]
        return data

    def _feed_chunked(self, data: bytes) -> bytes:
        out: list[bytes] = []
        pos, size = 0, len(data)
        while pos < size and self.phase == CHUNKED:
            state = self._chunk_state
            if state == _DATA:
                take = min(self._chunk_left, size - pos)
                if self._dechunk:
                    out.append(data[pos : pos + take])
                pos += take
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._chunk_state = _DATA_CRLF
                continue
            line_end = data.find(b"\n", pos)
            if line_end < 0:
                self._buf += data[pos:]
                if len(self._buf) > 4096:
                    raise FramingError("chunk line too long")
                pos = size
                break
            line = (self._buf + data[pos:line_end]).rstrip(b"\r")
            self._buf = b""
            pos = line_end + 1
            self._chunk_line(line)
        if self.phase == DONE and pos < size:
            self.extra = data[pos:]
        if self._dechunk:
            return b"".join(out)
        return data[:pos] if pos < size else data

    def _chunk_line(self, line: bytes) -> None:
        state = self._chunk_state
        if state == _SIZE:
            size = line.split(b";", 1)[0].strip()
            if not size or size.strip(b"0123456789abcdefABCDEF"):  # hex digits only
                raise FramingError(f"bad chunk size {line[:20]!r}")
            self._chunk_left = int(size, 16)
            self._chunk_state = _DATA if self._chunk_left else _TRAILER
        elif state == _DATA_CRLF:
            if line:
                raise FramingError("missing CRLF after chunk data")
            self._chunk_state = _SIZE
        elif not line:  # _TRAILER: an empty line ends the message
            self.phase = DONE


def _header_value(lower_head: bytes, name: bytes) -> bytes:
    """Values of every ``name`` field in a lower-cased head, comma-joined (empty if absent)."""
    marker = b"\r\n" + name + b":"
    start = lower_head.find(marker)
    values = []
    while start >= 0:
        start += len(marker)
        end = lower_head.find(b"\r\n", start)
        values.append(lower_head[start:end].strip())
        start = lower_head.find(marker, end)
    return b", ".join(values)


def strip_hop_by_hop(head: bytes, lower: bytes, *, keep_coding: bool) -> bytes:
    """Remove connection-specific fields from a response head (cheap when there are none).

    ``Transfer-Encoding`` stays when the body is relayed as received (``keep_coding``), since the
    framing of the relayed bytes is unchanged; when it is present, ``Content-Length`` goes (RFC
    9112 §6.3: the coding wins). Framing fields are never removed because ``Connection`` names
    them.
    """
    if _KEEP_ALIVE_LINE in head:  # the common nginx case, removed without a full rebuild
        head = head.replace(_KEEP_ALIVE_LINE, b"\r\n", 1)
        lower = head.lower()
    has_te = b"\r\ntransfer-encoding:" in lower
    if not (any(m in lower for m in _HOP_MARKERS) or has_te):
        return head
    lines = head[:-4].split(b"\r\n")
    connection_tokens = {
        t.strip() for t in _header_value(lower, b"connection").split(b",") if t.strip()
    } - {b"content-length", b"transfer-encoding"}
    kept = [lines[0]]
    for line in lines[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name == b"transfer-encoding":
            keep = keep_coding
        elif name == b"content-length":
            keep = not has_te
        else:
            keep = name not in HOP_BY_HOP and name not in connection_tokens
        if keep:
            kept.append(line)
    return b"\r\n".join(kept) + b"\r\n\r\n"

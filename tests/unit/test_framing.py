"""``ResponseFramer`` and ``strip_hop_by_hop``: incremental framing of upstream responses."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balancer.http.framing import (
    CHUNKED,
    DONE,
    HEAD,
    HOP_BY_HOP,
    LENGTH,
    MAX_HEAD,
    MAX_INTERIM,
    UNTIL_CLOSE,
    FramingError,
    ResponseFramer,
    strip_hop_by_hop,
)

FAST = settings(max_examples=100, deadline=None)

CL_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n"
CL_MSG = CL_HEAD + b"hello world"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
# Body with an extension, a chunk holding CRLF and a hex size above 9, and two trailers.
CHUNKED_BODY = (
    b"5;x=1\r\nhello\r\nB\r\n wor\r\nld!\r\n\r\n0\r\nExpires: 0\r\nX-Checksum: abc\r\n\r\n"
)
CHUNKED_PAYLOAD = b"hello" + b" wor\r\nld!\r\n"
CHUNKED_MSG = CHUNKED_HEAD + CHUNKED_BODY
DECHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
NEXT = b"HTTP/1.1 204 No Content\r\n\r\n"  # a pipelined next response


def framer(*, no_body: bool = False, dechunk: bool = False) -> ResponseFramer:
    f = ResponseFramer()
    f.reset(no_body, dechunk)
    return f


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` split at ``points`` (any order, duplicates allowed)."""
    bounds = [0, *sorted(set(points)), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def relay(
    pieces: list[bytes],
    message_len: int,
    *,
    no_body: bool = False,
    dechunk: bool = False,
) -> tuple[bytes, ResponseFramer]:
    """Feed ``pieces``; check DONE is reached exactly when ``message_len`` bytes have passed."""
    f = framer(no_body=no_body, dechunk=dechunk)
    out = b""
    consumed = 0
    for piece in pieces:
        out += f.feed(piece)
        consumed += len(piece)
        assert (f.phase == DONE) == (consumed >= message_len), (consumed, message_len, f.phase)
    return out, f


def head(*lines: bytes, status: bytes = b"HTTP/1.1 200 OK") -> bytes:
    return b"\r\n".join((status, *lines)) + b"\r\n\r\n"


# --- Content-Length ---------------------------------------------------------------------------


def test_content_length_fed_whole() -> None:
    f = framer()
    assert f.feed(CL_MSG) == CL_MSG
    assert f.phase == DONE
    assert f.status == 200
    assert f.reusable is True
    assert f.extra == b""


def test_content_length_head_then_body_pieces() -> None:
    f = framer()
    assert f.feed(CL_HEAD) == CL_HEAD
    assert f.phase == LENGTH
    assert f.remaining == 11
    assert f.feed(b"hello") == b"hello"
    assert f.phase == LENGTH
    assert f.remaining == 6
    assert f.feed(b" world") == b" world"
    assert f.phase == DONE
    assert f.remaining == 0


def test_content_length_byte_by_byte() -> None:
    stream = CL_MSG + NEXT
    out, f = relay([stream[i : i + 1] for i in range(len(stream))], len(CL_MSG))
    assert out == CL_MSG
    assert f.extra == NEXT


def test_content_length_extra_holds_pipelined_response() -> None:
    f = framer()
    assert f.feed(CL_MSG + NEXT) == CL_MSG
    assert f.phase == DONE
    assert f.extra == NEXT
    assert f.feed(b"more") == b""  # after DONE nothing is relayed
    assert f.extra == NEXT + b"more"


def test_extra_after_body_completed_in_a_later_feed() -> None:
    f = framer()
    assert f.feed(CL_HEAD + b"hel") == CL_HEAD + b"hel"
    assert f.feed(b"lo worldHTTP/1.1") == b"lo world"
    assert f.extra == b"HTTP/1.1"


def test_zero_content_length_is_done_after_head() -> None:
    msg = head(b"Content-Length: 0")
    f = framer()
    assert f.feed(msg + NEXT) == msg
    assert f.phase == DONE
    assert f.extra == NEXT


def test_content_length_with_surrounding_whitespace() -> None:
    f = framer()
    msg = head(b"content-length:   3  ") + b"abc"
    assert f.feed(msg) == msg
    assert f.phase == DONE


@FAST
@given(body=st.binary(max_size=200), trailing=st.binary(max_size=30), data=st.data())
def test_content_length_any_split(body: bytes, trailing: bytes, data: st.DataObject) -> None:
    msg = head(b"Content-Type: application/octet-stream", b"Content-Length: %d" % len(body))
    msg += body
    stream = msg + trailing
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=25))
    out, f = relay(cut(stream, points), len(msg))
    assert out == msg
    assert f.extra == trailing
    assert f.phase == DONE


# --- chunked ----------------------------------------------------------------------------------


def test_chunked_relayed_unchanged() -> None:
    f = framer()
    assert f.feed(CHUNKED_MSG + NEXT) == CHUNKED_MSG
    assert f.phase == DONE
    assert f.extra == NEXT
    assert f.reusable is True


def test_chunked_dechunked_and_transfer_encoding_removed() -> None:
    f = framer(dechunk=True)
    assert f.feed(CHUNKED_MSG + NEXT) == DECHUNKED_HEAD + CHUNKED_PAYLOAD
    assert f.phase == DONE
    assert f.extra == NEXT


def test_chunked_head_alone_enters_chunked_phase() -> None:
    f = framer()
    assert f.feed(CHUNKED_HEAD) == CHUNKED_HEAD
    assert f.phase == CHUNKED
    f.feed(b"3\r\nabc\r\n")
    assert f.phase == CHUNKED
    f.feed(b"0\r\n")
    assert f.phase == CHUNKED  # the empty line after the last chunk is still missing
    f.feed(b"\r\n")
    assert f.phase == DONE


def test_chunked_trailers_keep_message_open_until_empty_line() -> None:
    f = framer(dechunk=True)
    assert f.feed(CHUNKED_HEAD + b"2\r\nok\r\n0\r\nX-A: 1\r\n") == DECHUNKED_HEAD + b"ok"
    assert f.phase == CHUNKED
    assert f.feed(b"X-B: 2\r\n") == b""
    assert f.phase == CHUNKED
    assert f.feed(b"\r\nrest") == b""  # trailers are not part of the de-chunked payload
    assert f.phase == DONE
    assert f.extra == b"rest"


def test_chunked_with_gzip_then_chunked_coding() -> None:
    msg = head(b"Transfer-Encoding: gzip, chunked") + b"3\r\nxyz\r\n0\r\n\r\n"
    f = framer()
    assert f.feed(msg) == msg
    assert f.phase == DONE


def test_chunked_wins_over_content_length() -> None:
    body = b"1\r\nz\r\n0\r\n\r\n"
    msg = head(b"Content-Length: 100", b"Transfer-Encoding: chunked") + body
    f = framer()
    # RFC 9112 §6.3: the coding wins, and an intermediary drops the contradicting length.
    assert f.feed(msg) == head(b"Transfer-Encoding: chunked") + body
    assert f.phase == DONE


@pytest.mark.parametrize("dechunk", [False, True])
def test_chunked_byte_by_byte(dechunk: bool) -> None:
    stream = CHUNKED_MSG + NEXT
    pieces = [stream[i : i + 1] for i in range(len(stream))]
    out, f = relay(pieces, len(CHUNKED_MSG), dechunk=dechunk)
    assert out == (DECHUNKED_HEAD + CHUNKED_PAYLOAD if dechunk else CHUNKED_MSG)
    assert f.extra == NEXT


@pytest.mark.parametrize("dechunk", [False, True])
def test_chunked_split_between_cr_and_lf(dechunk: bool) -> None:
    body = b"5\r\nhello\r\n0\r\n\r\n"
    pieces = [CHUNKED_HEAD, b"5\r", b"\nhello\r", b"\n0\r", b"\n\r", b"\n"]
    out, f = relay(pieces, len(CHUNKED_HEAD + body), dechunk=dechunk)
    assert out == (DECHUNKED_HEAD + b"hello" if dechunk else CHUNKED_HEAD + body)
    assert f.extra == b""


EXTENSIONS = [b"", b";x=1", b';name="v;w"', b" ;a", b";a;b=c"]
TRAILERS = [b"Expires: 0", b"X-Checksum: abc", b"x-empty:"]


@st.composite
def chunked_bodies(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(the chunked wire bytes, the payload they carry)."""
    chunks = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=5))
    wire = b""
    for chunk in chunks:
        size = f"{len(chunk):x}"
        size = draw(st.sampled_from([size, size.upper(), "00" + size]))
        wire += size.encode() + draw(st.sampled_from(EXTENSIONS)) + b"\r\n" + chunk + b"\r\n"
    wire += draw(st.sampled_from([b"0", b"000"])) + draw(st.sampled_from(EXTENSIONS)) + b"\r\n"
    for trailer in draw(st.lists(st.sampled_from(TRAILERS), max_size=2)):
        wire += trailer + b"\r\n"
    return wire + b"\r\n", b"".join(chunks)


@FAST
@given(
    body=chunked_bodies(),
    dechunk=st.booleans(),
    trailing=st.binary(max_size=30),
    data=st.data(),
)
def test_chunked_any_split(
    body: tuple[bytes, bytes], dechunk: bool, trailing: bytes, data: st.DataObject
) -> None:
    wire, payload = body
    msg = CHUNKED_HEAD + wire
    stream = msg + trailing
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    out, f = relay(cut(stream, points), len(msg), dechunk=dechunk)
    assert out == (DECHUNKED_HEAD + payload if dechunk else msg)
    assert f.extra == trailing


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",  # empty size line
        b";x=1\r\nhello\r\n0\r\n\r\n",  # extension without a size
        b"5 6\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\nqq\r\n\r\n",  # the second size is bad
    ],
)
def test_chunked_malformed_size(body: bytes) -> None:
    with pytest.raises(FramingError):
        framer().feed(CHUNKED_HEAD + body)


@pytest.mark.parametrize(
    "body",
    [
        b"5\r\nhelloXX\r\n0\r\n\r\n",  # more data than announced
        b"5\r\nhello0\r\n\r\n",  # no CRLF before the last chunk
    ],
)
def test_chunked_missing_crlf_after_data(body: bytes) -> None:
    with pytest.raises(FramingError):
        framer().feed(CHUNKED_HEAD + body)


def test_chunked_missing_crlf_after_data_split() -> None:
    f = framer()
    f.feed(CHUNKED_HEAD + b"5\r\nhel")
    f.feed(b"lo")
    with pytest.raises(FramingError):
        f.feed(b"X\r\n0\r\n\r\n")


def test_chunked_size_line_too_long() -> None:
    f = framer()
    f.feed(CHUNKED_HEAD)
    with pytest.raises(FramingError):
        for _ in range(10):
            f.feed(b"0" * 1000)


def test_chunked_negative_size_rejected() -> None:
    with pytest.raises(FramingError):
        framer().feed(CHUNKED_HEAD + b"-5\r\nhello\r\n0\r\n\r\n")


@pytest.mark.parametrize("size", [b"0x5", b"+5", b"0_5"])
def test_chunked_non_hex_size_forms_rejected(size: bytes) -> None:
    with pytest.raises(FramingError):
        framer().feed(CHUNKED_HEAD + size + b"\r\nhello\r\n0\r\n\r\n")


# --- responses without a body -----------------------------------------------------------------


def test_head_request_with_content_length_done_after_head() -> None:
    msg = head(b"Content-Length: 1234")
    f = framer(no_body=True)
    assert f.feed(msg) == msg
    assert f.phase == DONE
    assert f.reusable is True
    assert f.feed(NEXT) == b""  # the next response is not taken for this one's body
    assert f.extra == NEXT


def test_head_request_with_chunked_done_after_head() -> None:
    f = framer(no_body=True)
    assert f.feed(CHUNKED_HEAD + NEXT) == CHUNKED_HEAD
    assert f.phase == DONE
    assert f.extra == NEXT


def test_head_request_head_split() -> None:
    msg = head(b"Content-Length: 5")
    out, f = relay([msg[:10], msg[10:-1], msg[-1:], NEXT], len(msg), no_body=True)
    assert out == msg
    assert f.extra == NEXT


@pytest.mark.parametrize(
    "status", [b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified"], ids=["204", "304"]
)
@pytest.mark.parametrize(
    "lines", [(), (b"Content-Length: 50",), (b'ETag: "x"',)], ids=["bare", "cl", "etag"]
)
def test_204_and_304_done_after_head(status: bytes, lines: tuple[bytes, ...]) -> None:
    msg = head(*lines, status=status)
    f = framer()
    assert f.feed(msg + NEXT) == msg
    assert f.phase == DONE
    assert f.status == int(status[9:12])
    assert f.reusable is True
    assert f.extra == NEXT


INTERIM_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
INTERIM_103 = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"


def test_interim_and_final_in_one_feed() -> None:
    f = framer()
    assert f.feed(INTERIM_100 + CL_MSG + NEXT) == INTERIM_100 + CL_MSG
    assert f.phase == DONE
    assert f.status == 200
    assert f.extra == NEXT


def test_interim_then_final_in_later_feed() -> None:
    f = framer()
    assert f.feed(INTERIM_100) == INTERIM_100
    assert f.phase == HEAD
    assert f.status == 100
    assert f.feed(CL_HEAD) == CL_HEAD
    assert f.phase == LENGTH
    assert f.status == 200
    assert f.feed(b"hello world") == b"hello world"
    assert f.phase == DONE


def test_interim_with_partial_final_head() -> None:
    f = framer()
    assert f.feed(INTERIM_103 + CL_HEAD[:20]) == INTERIM_103
    assert f.phase == HEAD
    assert f.feed(CL_HEAD[20:] + b"hello world") == CL_HEAD + b"hello world"
    assert f.phase == DONE


def test_several_interims_then_dechunked_final() -> None:
    # An HTTP/1.0 client gets no 1xx (RFC 9110 §15.2: a server must not send them to it).
    f = framer(dechunk=True)
    out = f.feed(INTERIM_100 + INTERIM_103 + CHUNKED_MSG)
    assert out == DECHUNKED_HEAD + CHUNKED_PAYLOAD
    assert f.phase == DONE
    assert f.status == 200


def test_a_burst_of_interims_is_relayed_up_to_a_bound_without_recursion() -> None:
    f = framer()
    out = f.feed(INTERIM_100 * MAX_INTERIM + CHUNKED_MSG)
    assert out == INTERIM_100 * MAX_INTERIM + CHUNKED_MSG
    assert f.phase == DONE
    with pytest.raises(FramingError, match="interim"):  # was a RecursionError at ~1,000
        framer().feed(INTERIM_100 * 20_000 + CHUNKED_MSG)


def test_interim_then_head_request_final() -> None:
    msg = head(b"Content-Length: 10")
    f = framer(no_body=True)
    assert f.feed(INTERIM_100 + msg + NEXT) == INTERIM_100 + msg
    assert f.phase == DONE
    assert f.extra == NEXT


def test_interim_then_final_with_connection_close() -> None:
    final = head(b"Connection: close", b"Content-Length: 0")
    f = framer()
    assert f.feed(INTERIM_100 + final) == INTERIM_100 + head(b"Content-Length: 0")
    assert f.phase == DONE
    assert f.reusable is False


@FAST
@given(trailing=st.binary(max_size=20), data=st.data())
def test_interim_and_final_any_split(trailing: bytes, data: st.DataObject) -> None:
    msg = INTERIM_100 + INTERIM_103 + CL_MSG
    stream = msg + trailing
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    out, f = relay(cut(stream, points), len(msg))
    assert out == msg
    assert f.status == 200
    assert f.extra == trailing


def test_101_is_final() -> None:
    msg = b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    f = framer()
    assert f.feed(msg + b"\x81\x05hello") == msg
    assert f.phase == DONE
    assert f.status == 101
    assert f.extra == b"\x81\x05hello"  # bytes of the new protocol, not another head


def test_101_connection_not_reusable() -> None:
    f = framer()
    f.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    assert f.reusable is False


# --- read until close -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg_head",
    [
        head(b"Content-Type: text/html"),
        head(b"Connection: keep-alive", status=b"HTTP/1.1 200 OK"),
        head(status=b"HTTP/1.0 200 OK"),
    ],
)
def test_no_length_reads_until_close(msg_head: bytes) -> None:
    f = framer()
    relayed_head = f.feed(msg_head + b"first")
    assert relayed_head.endswith(b"\r\n\r\nfirst")
    assert f.phase == UNTIL_CLOSE
    assert f.reusable is False
    for data in (b"\r\n\r\n", b"0\r\n\r\n", CL_MSG, b"", b"x" * 1000):
        assert f.feed(data) == data
        assert f.phase == UNTIL_CLOSE
    assert f.extra == b""


# --- reusable ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "lines", "reusable"),
    [
        (b"HTTP/1.1 200 OK", (b"Content-Length: 0",), True),
        (b"HTTP/1.1 200 OK", (b"Connection: keep-alive", b"Content-Length: 0"), True),
        (b"HTTP/1.1 200 OK", (b"Connection: close", b"Content-Length: 0"), False),
        (b"HTTP/1.1 200 OK", (b"connection: Close", b"Content-Length: 0"), False),
        (b"HTTP/1.1 200 OK", (b"Connection: close, X-Secret", b"Content-Length: 0"), False),
        (b"HTTP/1.1 200 OK", (b"Connection: close", b"Transfer-Encoding: chunked"), False),
        (b"HTTP/1.0 200 OK", (b"Content-Length: 0",), False),
        (b"HTTP/1.0 200 OK", (b"Connection: keep-alive", b"Content-Length: 0"), True),
        (b"HTTP/1.0 200 OK", (b"Connection: Keep-Alive", b"Content-Length: 0"), True),
        (b"HTTP/1.0 200 OK", (b"Connection: close", b"Content-Length: 0"), False),
        (b"HTTP/1.0 204 No Content", (), False),
        (b"HTTP/1.1 204 No Content", (b"Connection: close",), False),
    ],
)
def test_reusable(status: bytes, lines: tuple[bytes, ...], reusable: bool) -> None:
    f = framer()
    f.feed(head(*lines, status=status))
    assert f.reusable is reusable


def test_close_in_second_connection_field_not_reusable() -> None:
    f = framer()
    f.feed(head(b"Connection: keep-alive", b"Connection: close", b"Content-Length: 0"))
    assert f.reusable is False


# --- hop-by-hop fields ------------------------------------------------------------------------


PLAIN = head(
    b"Content-Type: text/plain",
    b"x-MiXeD-Case:  spaced value  ",
    b"Set-Cookie: a=1; Path=/",
    b"Content-Length: 0",
)


def test_head_without_hop_fields_unchanged() -> None:
    assert strip_hop_by_hop(PLAIN, PLAIN.lower(), keep_coding=False) == PLAIN
    f = framer()
    assert f.feed(PLAIN) == PLAIN


@pytest.mark.parametrize(
    "hop",
    [
        b"Connection: keep-alive",
        b"connection: Keep-Alive",
        b"Keep-Alive: timeout=5",
        b"Proxy-Connection: keep-alive",
        b"Upgrade: h2c",
        b"Trailer: Expires",
        b"TE: trailers",
        b"Proxy-Authenticate: Basic realm=x",
        b"Proxy-Authorization: Basic eA==",
    ],
)
@pytest.mark.parametrize("position", [1, 2, 4])
def test_each_hop_field_stripped_anywhere(hop: bytes, position: int) -> None:
    lines = PLAIN[:-4].split(b"\r\n")
    lines.insert(position, hop)
    with_hop = b"\r\n".join(lines) + b"\r\n\r\n"
    assert strip_hop_by_hop(with_hop, with_hop.lower(), keep_coding=False) == PLAIN
    f = framer()
    assert f.feed(with_hop) == PLAIN


def test_nginx_style_keep_alive_head() -> None:
    upstream = head(
        b"Server: nginx",
        b"Content-Type: text/html",
        b"Content-Length: 2",
        b"Connection: keep-alive",
        b"Keep-Alive: timeout=5",
    )
    expected = head(b"Server: nginx", b"Content-Type: text/html", b"Content-Length: 2")
    f = framer()
    assert f.feed(upstream + b"ok") == expected + b"ok"
    assert f.reusable is True


def test_fields_named_in_connection_stripped() -> None:
    upstream = head(
        b"X-Secret: before",
        b"Content-Type: text/plain",
        b"Connection: close, X-Secret , x-other",
        b"X-Other: 1",
        b"X-Kept: 2",
        b"x-secret: after",
        b"Content-Length: 0",
    )
    expected = head(b"Content-Type: text/plain", b"X-Kept: 2", b"Content-Length: 0")
    assert strip_hop_by_hop(upstream, upstream.lower(), keep_coding=False) == expected
    assert framer().feed(upstream) == expected


def test_keep_chunked_keeps_transfer_encoding_only() -> None:
    upstream = head(b"Transfer-Encoding: chunked", b"Trailer: Expires", b"Connection: keep-alive")
    kept = head(b"Transfer-Encoding: chunked")
    assert strip_hop_by_hop(upstream, upstream.lower(), keep_coding=True) == kept
    assert strip_hop_by_hop(upstream, upstream.lower(), keep_coding=False) == head()


def test_chunked_relay_strips_other_hop_fields_but_keeps_te() -> None:
    upstream = head(b"Trailer: Expires", b"Transfer-Encoding: chunked", b"Upgrade: h2c")
    body = b"1\r\na\r\n0\r\nExpires: 0\r\n\r\n"
    f = framer()
    assert f.feed(upstream + body) == head(b"Transfer-Encoding: chunked") + body
    f = framer(dechunk=True)
    assert f.feed(upstream + body) == head() + b"a"


def test_non_chunked_transfer_encoding_kept_when_relayed_raw() -> None:
    upstream = head(b"Transfer-Encoding: gzip")
    f = framer()
    assert f.feed(upstream + b"\x1f\x8b") == upstream + b"\x1f\x8b"
    assert f.phase == UNTIL_CLOSE


HOP_LINES = [
    b"Keep-Alive: timeout=5, max=100",
    b"Proxy-Connection: keep-alive",
    b"Upgrade: h2c",
    b"Trailer: Expires",
    b"TE: trailers",
    b"Transfer-Encoding: chunked",
    b"Proxy-Authorization: Basic eA==",
]
CONNECTION_LINES = [
    b"Connection: keep-alive",
    b"connection: Keep-Alive",
    b"CONNECTION: close",
    b"Connection: close, X-Secret",
]
names = st.from_regex(rb"\A[A-Za-z][A-Za-z0-9-]{0,14}\Z", fullmatch=True).filter(
    lambda n: n.lower() not in HOP_BY_HOP | {b"close", b"keep-alive", b"x-secret"}
)
values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20).map(
    str.encode
)


@FAST
@given(
    fields=st.lists(st.tuples(names, values), max_size=8),
    hops=st.lists(st.sampled_from(HOP_LINES), unique=True, max_size=4),
    connection=st.none() | st.sampled_from(CONNECTION_LINES),
    data=st.data(),
)
def test_strip_keeps_other_fields_in_order_byte_exact(
    fields: list[tuple[bytes, bytes]],
    hops: list[bytes],
    connection: bytes | None,
    data: st.DataObject,
) -> None:
    kept = [name + b":" + value for name, value in fields]
    inserted = list(kept)
    for hop in hops + ([connection] if connection else []):
        inserted.insert(data.draw(st.integers(0, len(inserted))), hop)
    if connection and b"X-Secret" in connection:
        inserted.insert(data.draw(st.integers(0, len(inserted))), b"x-secret: hidden")
    upstream = head(*inserted)
    assert strip_hop_by_hop(upstream, upstream.lower(), keep_coding=False) == head(*kept)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        b"HTTX/1.1 200 OK\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"\r\n\r\n",
        b"HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_bad_status_line(bad: bytes) -> None:
    with pytest.raises(FramingError):
        framer().feed(bad)


def test_bad_status_line_split_across_feeds() -> None:
    f = framer()
    assert f.feed(b"HTTP/1.1 ok") == b""
    with pytest.raises(FramingError):
        f.feed(b"ay\r\n\r\n")


@pytest.mark.parametrize(
    "bad", [b"HTTP/1.1 20 OK\r\n\r\n", b"HTTP/1.1 2\r\n\r\n", b"HTTP/1.1 +20 OK\r\n\r\n"]
)
def test_status_code_must_have_three_digits(bad: bytes) -> None:
    with pytest.raises(FramingError):
        framer().feed(bad)


def test_oversized_head_without_terminator() -> None:
    f = framer()
    with pytest.raises(FramingError):
        f.feed(b"HTTP/1.1 200 OK\r\n" + b"X" * MAX_HEAD)


def test_oversized_head_fed_in_pieces() -> None:
    f = framer()
    f.feed(b"HTTP/1.1 200 OK\r\nX-Big: ")
    with pytest.raises(FramingError):
        for _ in range(MAX_HEAD // 1000 + 2):
            f.feed(b"a" * 1000)


def test_head_of_exactly_max_head_unterminated_is_still_buffered() -> None:
    f = framer()
    start = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: "
    assert f.feed(start + b"a" * (MAX_HEAD - len(start))) == b""
    assert f.phase == HEAD


def test_oversized_complete_head_rejected() -> None:
    big = head(b"X-Big: " + b"a" * (MAX_HEAD + 10), b"Content-Length: 0")
    with pytest.raises(FramingError):
        framer().feed(big)


@pytest.mark.parametrize("value", [b"abc", b"", b"1.5", b"5, 5", b"0x10", b"-1", b"-0x1", b" - 3"])
def test_bad_content_length(value: bytes) -> None:
    with pytest.raises(FramingError):
        framer().feed(head(b"Content-Length: " + value))


@pytest.mark.parametrize("value", [b"+5", b"1_0"])
def test_content_length_non_digit_forms_rejected(value: bytes) -> None:
    with pytest.raises(FramingError):
        framer().feed(head(b"Content-Length: " + value))


# --- reset ------------------------------------------------------------------------------------


def test_reset_for_pipelined_second_response() -> None:
    f = framer()
    assert f.feed(CL_MSG + CHUNKED_MSG[:30]) == CL_MSG
    leftover = f.extra
    assert leftover == CHUNKED_MSG[:30]
    f.reset(False, True)
    assert (f.phase, f.status, f.extra, f.reusable, f.remaining) == (HEAD, 0, b"", True, 0)
    out = f.feed(leftover) + f.feed(CHUNKED_MSG[30:])
    assert out == DECHUNKED_HEAD + CHUNKED_PAYLOAD
    assert f.phase == DONE
    assert f.status == 200


def test_reset_after_connection_close_response() -> None:
    f = framer()
    f.feed(head(b"Connection: close", b"Content-Length: 0", status=b"HTTP/1.1 404 Not Found"))
    assert (f.status, f.reusable) == (404, False)
    f.reset(False, False)
    assert f.feed(CL_MSG) == CL_MSG
    assert (f.status, f.reusable, f.phase) == (200, True, DONE)


def test_reset_mid_head_discards_partial_head() -> None:
    f = framer()
    f.feed(b"HTTP/1.1 500 Int")
    f.reset(False, False)
    assert f.feed(CL_MSG) == CL_MSG
    assert f.status == 200


def test_reset_mid_chunk_discards_chunk_state() -> None:
    f = framer()
    f.feed(CHUNKED_HEAD + b"10\r\nabc")  # in the middle of a 16-byte chunk
    f.reset(False, False)
    assert f.feed(CHUNKED_MSG) == CHUNKED_MSG
    assert f.phase == DONE


def test_reset_mid_size_line_discards_buffer() -> None:
    f = framer()
    f.feed(CHUNKED_HEAD + b"ff")  # an unfinished size line
    f.reset(False, True)
    assert f.feed(CHUNKED_MSG) == DECHUNKED_HEAD + CHUNKED_PAYLOAD


def test_reset_switches_no_body() -> None:
    msg = head(b"Content-Length: 3")
    f = framer(no_body=True)
    assert f.feed(msg) == msg
    assert f.phase == DONE
    f.reset(False, False)
    assert f.feed(msg) == msg
    assert f.phase == LENGTH
    assert f.feed(b"abc") == b"abc"
    assert f.phase == DONE

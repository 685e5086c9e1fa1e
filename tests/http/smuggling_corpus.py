"""The request-smuggling and framing corpus: raw payloads and what RFC 9112 makes of them.

Each ``Case`` is one payload sent raw over one client connection, and ``sent``: the requests a
correct HTTP/1.1 parser finds in it as the client meant them, in order, up to the first point
where RFC 9112 requires an error (a body is what its framing delimits; bytes after a request
that asked for a close, or after an invalid one, are no request). A balancer may refuse any
request (then nothing of it, nor of what follows, may reach a replica), or forward it, and then
the replica must receive exactly that request: same method, target in origin-form, one Host
(the authority of an absolute-form target), body, one X-Forwarded-For. ``forwarded``: how many
of ``sent`` must reach the replica (valid requests the balancer may not refuse).
``route``: ``admin`` requests are answered by the balancer and never reach a replica;
``not-admin`` ones may reach a replica but must never be served by the admin app.
``writes``: extra ways of sending the payload (``bytes``: one byte per write; ``lines``: one
line per write; ``head``: the head, then the rest), to exercise incremental parsing.
``open_body``: the payload ends inside a body, so the replica may hold a request in progress.

Public research this follows: Watchfire 2005 (CL.CL, CL.TE), PortSwigger "HTTP Desync Attacks"
(TE.CL, TE.TE obfuscations, ``Connection``-named fields, h2c upgrades), the h11/llhttp/netty
advisories on chunk lines (bare LF, extensions, size overflow) and RFC 9112 §2.2, §3.2, §5,
§6, §7, §9.6.
"""

from __future__ import annotations

from tests.http.smuggling_cases import (
    ALL,
    BYTES,
    CL_TE_BODY,
    HELLO,
    OWN_XFF,
    P_EMPTY,
    P_HELLO,
    SMUG,
    SMUGGLED,
    TE,
    TE_CL_BODY,
    Case,
    G,
    Sent,
    case,
    cl,
    get,
    msg,
    post,
)
from tests.http.smuggling_corpus_messages import ADMIN, CONNECTION, FORMS, LIMITS, LINES, PIPELINES
from tests.http.wire import chunked

BASELINE = [
    case("get", get(b"/home?id=1"), Sent("GET", "/home?id=1"), forwarded=1, writes=ALL),
    case("post-cl", post(cl(5), body=b"hello"), P_HELLO, forwarded=1, writes=ALL),
    case("post-chunked", post(TE, body=chunked(b"hel", b"lo")), P_HELLO, forwarded=1, writes=ALL),
    case("post-cl-0", post(cl(0)), P_EMPTY, forwarded=1),
    case("get-with-body", get(b"/g", cl(5)) + b"hello", Sent("GET", "/g", b"hello"), forwarded=1),
    case(
        "head-with-body",
        msg(b"HEAD /h HTTP/1.1", b"Host: a", cl(2), body=b"hi"),
        Sent("HEAD", "/h", b"hi"),
        forwarded=1,
    ),
    case(
        "xff-client",
        get(b"/g", b"X-Forwarded-For: 1.2.3.4"),
        Sent("GET", "/g", xff=("1.2.3.4, " + OWN_XFF,)),
        forwarded=1,
    ),
    case(
        "xff-client-two-lines",
        get(b"/g", b"X-Forwarded-For: 1.2.3.4", b"X-Forwarded-For: 5.6.7.8"),
        Sent("GET", "/g", xff=("1.2.3.4, 5.6.7.8, " + OWN_XFF,)),
        forwarded=1,
    ),
    case("chunk-ext", post(TE, body=b"5;name=value\r\nhello\r\n0\r\n\r\n"), P_HELLO),
    case(
        "chunk-trailer", post(TE, body=b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), P_HELLO, forwarded=1
    ),
    case("expect-100", post(b"Expect: 100-continue", cl(5), body=b"hello"), P_HELLO),
    case("expect-unknown", post(b"Expect: 200-ok", cl(5), body=b"hello"), P_HELLO),
    case("options-asterisk", msg(b"OPTIONS * HTTP/1.1", b"Host: a"), Sent("OPTIONS", "*")),
    case("host-empty", msg(b"GET /g HTTP/1.1", b"Host:"), Sent("GET", "/g", host="")),
    case("version-1.2", msg(b"GET /g HTTP/1.2", b"Host: a"), G),
    case("method-lowercase", msg(b"get /g HTTP/1.1", b"Host: a"), Sent("get", "/g")),
    case("high-bit-target", get(b"/\xff"), Sent("GET", "/\xff")),
]


CL_TE = [
    case("cl-te", post(cl(len(CL_TE_BODY)), TE, body=CL_TE_BODY), P_EMPTY, SMUG, writes=BYTES),
    case("te-cl", post(TE, cl(len(CL_TE_BODY)), body=CL_TE_BODY), P_EMPTY, SMUG),
    case("te-cl-4", post(TE, cl(4), body=TE_CL_BODY), Sent("POST", "/p", SMUGGLED), writes=BYTES),
    case(
        "cl-te-chunked-identity",
        post(cl(len(CL_TE_BODY)), b"Transfer-Encoding: chunked, identity", body=CL_TE_BODY),
    ),
    case("te-chunked-identity", post(b"Transfer-Encoding: chunked, identity", body=HELLO)),
    case("te-identity-chunked", post(b"Transfer-Encoding: identity, chunked", body=HELLO)),
    # A coding list is valid HTTP, but a strict server refuses all but chunked (h11, nginx: 501)
    # and a lax one may fall back to no body: the balancer may not pass it on as it came.
    case("te-gzip-chunked", post(b"Transfer-Encoding: gzip, chunked", body=HELLO)),
    case("te-leading-space", post(b"Transfer-Encoding:  chunked", body=HELLO), P_HELLO),
    case("te-tab", post(b"Transfer-Encoding:\tchunked", body=HELLO), P_HELLO),
    case("te-trailing-tab", post(b"Transfer-Encoding: chunked\t", body=HELLO), P_HELLO),
    case("te-space-before-colon", post(b"Transfer-Encoding : chunked", body=HELLO)),
    case(
        "te-space-before-colon-cl",
        post(b"Transfer-Encoding : chunked", cl(len(CL_TE_BODY)), body=CL_TE_BODY),
    ),
    case("te-value-mixed-case", post(b"Transfer-Encoding: cHuNkEd", body=HELLO), P_HELLO),
    case("te-name-mixed-case", post(b"Transfer-encoding: chunked", body=HELLO), P_HELLO),
    case("te-duplicated", post(TE, TE, body=HELLO)),
    case(
        "te-identity-then-chunked",
        post(b"Transfer-Encoding: identity", TE, cl(len(CL_TE_BODY)), body=CL_TE_BODY),
    ),
    case("te-xchunked", post(b"Transfer-Encoding: xchunked", body=HELLO), writes=BYTES),
    case("te-xchunked-cl", post(b"Transfer-Encoding: xchunked", cl(len(HELLO)), body=HELLO)),
    case("te-chunked-param", post(b"Transfer-Encoding: chunked;q=1", body=HELLO)),
    case("te-quoted", post(b'Transfer-Encoding: "chunked"', body=HELLO)),
    case("te-vertical-tab", post(b"Transfer-Encoding:\x0bchunked", body=HELLO)),
    case("te-nul", post(b"Transfer-Encoding: chunked\x00", body=HELLO)),
    case("te-leading-comma", post(b"Transfer-Encoding: , chunked", body=HELLO), P_HELLO),
    case("te-obs-fold", post(b"Transfer-Encoding:", b" chunked", body=HELLO), P_HELLO),
    case("te-http10", msg(b"POST /p HTTP/1.0", b"Host: a", TE, body=HELLO)),
    case("te-http10-cl", msg(b"POST /p HTTP/1.0", b"Host: a", TE, cl(len(HELLO)), body=HELLO)),
    case("te-underscore-name", post(b"Transfer_Encoding: chunked", cl(5), body=b"hello"), P_HELLO),
]


CONTENT_LENGTH = [
    case("cl-list-same", post(b"Content-Length: 5, 5", body=b"hello"), P_HELLO),
    case("cl-lines-same", post(cl(5), cl(5), body=b"hello"), P_HELLO),
    case("cl-lines-conflict", post(cl(5), cl(6), body=b"hello!")),
    case("cl-list-conflict", post(b"Content-Length: 5, 6", body=b"hello!")),
    case("cl-plus", post(b"Content-Length: +5", body=b"hello")),
    case("cl-hex", post(b"Content-Length: 0x5", body=b"hello")),
    case("cl-negative", post(b"Content-Length: -1", body=b"hello")),
    case("cl-empty", post(b"Content-Length:", body=b"hello")),
    case("cl-leading-space", post(b"Content-Length:  5", body=b"hello"), P_HELLO),
    case("cl-trailing-space", post(b"Content-Length: 5 ", body=b"hello"), P_HELLO),
    case("cl-leading-zeros", post(b"Content-Length: 0005", body=b"hello"), P_HELLO),
    case("cl-many-zeros", post(b"Content-Length: " + b"0" * 100 + b"5", body=b"hello"), P_HELLO),
    case("cl-overflow", post(b"Content-Length: 99999999999999999999999", body=b"hello")),
    case(
        "cl-large-open",
        post(b"Content-Length: 1000000", body=b"hello"),
        Sent("POST", "/p", b"?"),
        open_body=True,
    ),
    case("cl-space-before-colon", post(b"Content-Length : 5", body=b"hello")),
    case(
        "cl-underscore-name",
        post(b"Content_Length: %d" % len(SMUGGLED), body=SMUGGLED),
        P_EMPTY,
        SMUG,
    ),
    case("cl-trailing-comma", post(b"Content-Length: 5,", body=b"hello"), P_HELLO),
    case("cl-obs-fold", post(b"Content-Length:", b" 5", body=b"hello"), P_HELLO),
    case(
        "cl-smuggle-on-get",
        get(b"/g", cl(len(SMUGGLED))) + SMUGGLED,
        Sent("GET", "/g", SMUGGLED),
        forwarded=1,
    ),
]


CHUNKS = [
    case("chunk-ext-long", post(TE, body=b"5;" + b"e" * 4000 + b"\r\nhello\r\n0\r\n\r\n"), P_HELLO),
    case("chunk-ext-quoted", post(TE, body=b'5;a="b;c"\r\nhello\r\n0\r\n\r\n'), P_HELLO),
    case("chunk-ext-quoted-crlf", post(TE, body=b'5;a="\r\n0\r\n\r\n"\r\nhello\r\n0\r\n\r\n')),
    case("chunk-ext-bare-lf", post(TE, body=b"5;a\nhello\r\n0\r\n\r\n"), P_HELLO),
    case("chunk-size-lf", post(TE, body=b"5\nhello\r\n0\r\n\r\n"), P_HELLO, writes=BYTES),
    case("chunk-size-leading-zeros", post(TE, body=b"0005\r\nhello\r\n0\r\n\r\n"), P_HELLO),
    case("chunk-size-many-zeros", post(TE, body=b"0" * 40 + b"5\r\nhello\r\n0\r\n\r\n"), P_HELLO),
    case(
        "chunk-size-overflow",
        post(TE, body=b"FFFFFFFFFFFFFFFFF1\r\nhello\r\n0\r\n\r\n"),
        writes=ALL,
    ),
    case("chunk-size-negative", post(TE, body=b"-5\r\nhello\r\n0\r\n\r\n")),
    case("chunk-size-hex-prefix", post(TE, body=b"0x5\r\nhello\r\n0\r\n\r\n")),
    case("chunk-size-plus", post(TE, body=b"+5\r\nhello\r\n0\r\n\r\n")),
    case("chunk-size-empty", post(TE, body=b"\r\nhello\r\n0\r\n\r\n")),
    case("chunk-size-trailing-space", post(TE, body=b"5 \r\nhello\r\n0\r\n\r\n"), P_HELLO),
    case("chunk-size-leading-space", post(TE, body=b" 5\r\nhello\r\n0\r\n\r\n"), P_HELLO),
    case(
        "chunk-size-huge-open",
        post(TE, body=b"7FFFFFFFFFFFFFFF\r\nhello"),
        Sent("POST", "/p", b"?"),
        open_body=True,
    ),
    case("chunk-data-no-crlf", post(TE, body=b"5\r\nhelloX0\r\n\r\n")),
    case("chunk-data-longer", post(TE, body=b"3\r\nhello\r\n0\r\n\r\n")),
    case("chunk-data-lf", post(TE, body=b"5\r\nhello\n0\r\n\r\n"), P_HELLO),
    case("chunk-last-lf", post(TE, body=b"5\r\nhello\r\n0\n\n"), P_HELLO),
    case(
        "chunk-trailer-cl", post(TE, body=b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"), P_HELLO
    ),
    case("chunk-trailer-te", post(TE, body=b"5\r\nhello\r\n0\r\n" + TE + b"\r\n\r\n"), P_HELLO),
    case(
        "chunk-trailer-then-request",
        post(TE, body=b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n" + SMUGGLED),
        P_HELLO,
        SMUG,
        forwarded=2,
    ),
    case("chunk-trailer-request-line", post(TE, body=b"5\r\nhello\r\n0\r\n" + SMUGGLED)),
    case(
        "chunked-then-request",
        post(TE, body=HELLO + SMUGGLED),
        P_HELLO,
        SMUG,
        forwarded=2,
        writes=BYTES,
    ),
]

CORPUS: list[Case] = [
    *BASELINE,
    *CL_TE,
    *CONTENT_LENGTH,
    *LINES,
    *CHUNKS,
    *CONNECTION,
    *PIPELINES,
    *FORMS,
    *LIMITS,
    *ADMIN,
]

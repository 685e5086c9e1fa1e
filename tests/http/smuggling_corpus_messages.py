"""The request-smuggling corpus, continued (see ``smuggling_corpus``): line endings and bytes
in heads, ``Connection``-named fields, pipelines, request-target forms, versions and
upgrades, size limits, admin and worker-only paths."""

from __future__ import annotations

from tests.http.smuggling_cases import (
    BYTES,
    HELLO,
    OWN_XFF,
    P_HELLO,
    SMUG,
    SMUGGLED,
    TE,
    G,
    Sent,
    case,
    cl,
    get,
    msg,
    post,
)
from tests.http.wire import chunked

LINES = [
    case("obs-fold", get(b"/g", b"X-A: 1", b" 2"), G, writes=BYTES),
    case("obs-fold-tab", get(b"/g", b"X-A: 1", b"\t2"), G),
    case("obs-fold-host", msg(b"GET /g HTTP/1.1", b"Host: a", b" b")),
    case("obs-fold-first-line", msg(b"GET /g HTTP/1.1", b" X-A: 1", b"Host: a"), G),
    case("bare-lf", b"GET /g HTTP/1.1\nHost: a\n\n", G, writes=BYTES),
    case("bare-lf-one-line", b"GET /g HTTP/1.1\r\nX-A: 1\nHost: a\r\n\r\n", G),
    case(
        "bare-lf-te", b"POST /p HTTP/1.1\r\nHost: a\r\nX-A: 1\n" + TE + b"\r\n\r\n" + HELLO, P_HELLO
    ),
    case("bare-cr-value", get(b"/g", b"X-A: 1\rX-B: 2"), G),
    case(
        "bare-cr-cl", get(b"/g", b"X-A: 1\rContent-Length: %d" % len(SMUGGLED)) + SMUGGLED, G, SMUG
    ),
    case("bare-cr-line-end", b"GET /g HTTP/1.1\rHost: a\r\r\n\r\n"),
    case("nul-value", get(b"/g", b"X-A: a\x00b"), G),
    case("nul-name", get(b"/g", b"X-\x00A: 1")),
    case("nul-target", get(b"/a\x00b")),
    case("ctl-value", get(b"/g", b"X-A: a\x01b")),
    case("del-value", get(b"/g", b"X-A: a\x7fb")),
    case("ctl-target", get(b"/a\x01b")),
    case("tab-target", get(b"/a\tb")),
    case("space-target", msg(b"GET /a b HTTP/1.1", b"Host: a")),
    case("name-space", get(b"/g", b"X A: 1")),
    case("name-paren", get(b"/g", b"X(A): 1")),
    case("name-at", get(b"/g", b"X@A: 1")),
    case("name-empty", get(b"/g", b": 1")),
    case("no-colon", get(b"/g", b"X-A")),
    case("request-line-double-space", msg(b"GET  /g HTTP/1.1", b"Host: a"), G),
    case("version-lowercase", msg(b"GET /g http/1.1", b"Host: a")),
]


CONNECTION = [
    case(
        "conn-content-length",
        post(b"Connection: content-length", cl(len(SMUGGLED)), body=SMUGGLED, target=b"/home?id=1"),
        Sent("POST", "/home?id=1", SMUGGLED),
        writes=BYTES,
    ),
    case(
        "conn-transfer-encoding",
        post(b"Connection: transfer-encoding", TE, body=chunked(SMUGGLED)),
        Sent("POST", "/p", SMUGGLED),
    ),
    case("conn-host", get(b"/g", b"Connection: host"), G),
    case(
        "conn-host-cl",
        post(b"Connection: keep-alive, Host, Content-Length", cl(5), body=b"hello"),
        P_HELLO,
    ),
    case(
        "conn-second-line-cl",
        post(
            b"Connection: keep-alive",
            b"Connection: content-length",
            cl(len(SMUGGLED)),
            body=SMUGGLED,
        ),
        Sent("POST", "/p", SMUGGLED),
    ),
    case(
        "conn-upper-cl",
        post(b"Connection: CONTENT-LENGTH", cl(len(SMUGGLED)), body=SMUGGLED),
        Sent("POST", "/p", SMUGGLED),
    ),
    case(
        "conn-xff",
        get(b"/g", b"X-Forwarded-For: 1.2.3.4", b"Connection: x-forwarded-for"),
        Sent("GET", "/g", xff=(OWN_XFF, "1.2.3.4, " + OWN_XFF)),
    ),
    case("conn-keep-alive", get(b"/g", b"Connection: keep-alive") + get(b"/g"), G, G, forwarded=2),
    case("conn-close", get(b"/g", b"Connection: close") + SMUGGLED, G, forwarded=1),
    case("conn-close-upper", get(b"/g", b"Connection: CLOSE") + SMUGGLED, G, forwarded=1),
    case("conn-close-list", get(b"/g", b"Connection: te, close") + SMUGGLED, G, forwarded=1),
    case(
        "conn-close-cl",
        post(b"Connection: close, content-length", cl(len(SMUGGLED)), body=SMUGGLED),
        Sent("POST", "/p", SMUGGLED),
    ),
    case("conn-te-trailers", get(b"/g", b"Connection: TE", b"TE: trailers"), G, forwarded=1),
    case(
        "conn-request-id",
        get(b"/g", b"Connection: x-request-id", b"X-Request-ID: 7"),
        G,
        forwarded=1,
    ),
]


PIPELINES = [
    case("pipe-2", get(b"/g") + get(b"/g"), G, G, forwarded=2),
    case("pipe-5", get(b"/g") * 5, *[G] * 5, forwarded=5, writes=BYTES),
    case("pipe-post-get", post(cl(5), body=b"hello") + get(b"/g"), P_HELLO, G, forwarded=2),
    case(
        "pipe-bad-middle",
        get(b"/g") * 2 + b"BAD\r\n\r\n" + get(b"/g"),
        G,
        G,
        forwarded=2,
        writes=("lines",),
    ),
    case("pipe-bad-first", b"BAD\r\n\r\n" + get(b"/g")),
    case(
        "pipe-bad-cl-middle",
        get(b"/g") + post(b"Content-Length: +5", body=b"hello") + get(),
        G,
        forwarded=1,
    ),
    case(
        "pipe-bad-te-middle",
        get(b"/g") + post(b"Transfer-Encoding: xchunked", body=HELLO) + get(),
        G,
        forwarded=1,
    ),
    case(
        "pipe-overflow-middle",
        get(b"/g") + post(TE, body=b"FFFFFFFFFFFFFFFFF1\r\nhello\r\n0\r\n\r\n") + get(),
        G,
        forwarded=1,
    ),
    case(
        "pipe-conn-cl-middle",
        get(b"/g") + post(b"Connection: content-length", cl(len(SMUGGLED)), body=SMUGGLED),
        G,
        Sent("POST", "/p", SMUGGLED),
        forwarded=1,
    ),
    case("pipe-no-host-middle", get(b"/g") + msg(b"GET /g HTTP/1.1") + get(), G, forwarded=1),
    case("pipe-http10-close", msg(b"GET /g HTTP/1.0", b"Host: a") + get(b"/g"), G, forwarded=1),
    case(
        "pipe-absolute-middle",
        get(b"/g") + msg(b"GET http://evil/x HTTP/1.1", b"Host: a") + get(b"/g"),
        G,
        Sent("GET", "/x", host="evil"),
        G,
        forwarded=1,
    ),
]


FORMS = [
    case(
        "absolute-form",
        msg(b"GET http://evil/rep HTTP/1.1", b"Host: a"),
        Sent("GET", "/rep", host="evil"),
    ),
    case(
        "absolute-form-home",
        msg(b"GET http://evil/home?id=1 HTTP/1.1", b"Host: a"),
        Sent("GET", "/home?id=1", host="evil"),
        writes=BYTES,
    ),
    case(
        "absolute-form-https",
        msg(b"GET https://evil:8443/x HTTP/1.1", b"Host: a"),
        Sent("GET", "/x", host="evil:8443"),
    ),
    case(
        "absolute-form-no-path",
        msg(b"GET http://evil HTTP/1.1", b"Host: a"),
        Sent("GET", "/", host="evil"),
    ),
    case(
        "absolute-form-query",
        msg(b"GET http://evil?q=1 HTTP/1.1", b"Host: a"),
        Sent("GET", "/?q=1", host="evil"),
    ),
    case(
        "absolute-form-upper",
        msg(b"GET HTTP://evil/x HTTP/1.1", b"Host: a"),
        Sent("GET", "/x", host="evil"),
    ),
    case("absolute-form-userinfo", msg(b"GET http://u:p@evil/x HTTP/1.1", b"Host: a")),
    case("absolute-form-ftp", msg(b"GET ftp://evil/x HTTP/1.1", b"Host: a")),
    case(
        "absolute-form-post-cl",
        msg(b"POST http://evil/p HTTP/1.1", b"Host: a", cl(5), body=b"hello"),
        Sent("POST", "/p", b"hello", host="evil"),
    ),
    case("authority-form-get", msg(b"GET evil:443 HTTP/1.1", b"Host: evil:443")),
    case("connect", msg(b"CONNECT evil:443 HTTP/1.1", b"Host: evil:443")),
    case("connect-then-request", msg(b"CONNECT evil:443 HTTP/1.1", b"Host: evil:443") + SMUGGLED),
    case("asterisk-get", msg(b"GET * HTTP/1.1", b"Host: a")),
    case("relative-target", msg(b"GET g HTTP/1.1", b"Host: a")),
    case(
        "upgrade-websocket",
        get(
            b"/chat",
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            b"Sec-WebSocket-Version: 13",
        ),
        Sent("GET", "/chat"),
    ),
    case(
        "upgrade-h2c",
        get(
            b"/g",
            b"Upgrade: h2c",
            b"Connection: Upgrade, HTTP2-Settings",
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
        ),
        G,
    ),
    case(
        "upgrade-then-request",
        get(b"/chat", b"Upgrade: websocket", b"Connection: Upgrade") + SMUGGLED,
        Sent("GET", "/chat"),
        SMUG,
    ),
    case(
        "upgrade-post", post(b"Upgrade: h2c", b"Connection: Upgrade", cl(5), body=b"hello"), P_HELLO
    ),
    case("http10-host", msg(b"GET /g HTTP/1.0", b"Host: a"), G, forwarded=1),
    case("http10-no-host", msg(b"GET /g HTTP/1.0"), Sent("GET", "/g", host=None), forwarded=1),
    case(
        "http10-keep-alive",
        msg(b"GET /g HTTP/1.0", b"Host: a", b"Connection: keep-alive")
        + msg(b"GET /g HTTP/1.0", b"Host: a"),
        G,
        G,
        forwarded=1,
    ),
    case(
        "http10-post-cl",
        msg(b"POST /p HTTP/1.0", b"Host: a", cl(5), body=b"hello"),
        P_HELLO,
        forwarded=1,
    ),
    case("http09", b"GET /g\r\n"),
    case("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    case("http2-version", msg(b"GET /g HTTP/2.0", b"Host: a")),
    case("http11-no-host", msg(b"GET /g HTTP/1.1")),
    case("http11-two-hosts", msg(b"GET /g HTTP/1.1", b"Host: a", b"Host: b")),
    case("host-space-before-colon", msg(b"GET /g HTTP/1.1", b"Host : a")),
]


LIMITS = [
    case(
        "target-8000",
        get(b"/" + b"t" * 7999),
        Sent("GET", "/" + "t" * 7999),
        forwarded=1,
        writes=("lines",),
    ),
    case("target-8001", get(b"/" + b"t" * 8000) + get()),
    case("field-7990", get(b"/g", b"X-Big: " + b"b" * 7983), G, forwarded=1),
    case("field-8001", get(b"/g", b"X-Big: " + b"b" * 7994) + get()),
    case("fields-100", get(b"/g", *[b"X-F%d: f" % i for i in range(99)]), G, forwarded=1),
    case("fields-101", get(b"/g", *[b"X-F%d: f" % i for i in range(100)]) + get()),
    case(
        "head-31k",
        get(b"/g", *[b"X-F%d: " % i + b"f" * 7900 for i in range(4)]),
        G,
        forwarded=1,
        writes=("lines",),
    ),
    case("head-33k", get(b"/g", *[b"X-F%d: " % i + b"f" * 7000 for i in range(5)]) + get()),
]


ADMIN = [
    case("admin-rep", get(b"/rep"), Sent("GET", "/rep", route="admin"), forwarded=0),
    case("admin-lb-status", get(b"/lb/status"), Sent("GET", "/lb/status", route="admin")),
    case(
        "admin-rep-then-request", get(b"/rep") + SMUGGLED, Sent("GET", "/rep", route="admin"), SMUG
    ),
    case(
        "admin-membership", get(b"/lb/membership"), Sent("GET", "/lb/membership", route="not-admin")
    ),
    case(
        "admin-membership-escaped",
        get(b"/lb/%6Dembership"),
        Sent("GET", "/lb/%6Dembership", route="not-admin"),
    ),
    case(
        "admin-membership-fragment",
        get(b"/lb/membership#x"),
        Sent("GET", "/lb/membership#x", route="not-admin"),
    ),
    case(
        "admin-membership-absolute",
        msg(b"GET http://a/lb/membership HTTP/1.1", b"Host: a"),
        Sent("GET", "/lb/membership", route="not-admin"),
    ),
    case(
        "admin-membership-double-slash",
        get(b"//lb/membership"),
        Sent("GET", "//lb/membership", route="not-admin"),
    ),
    case(
        "admin-worker-stats",
        post(cl(2), body=b"{}", target=b"/lb/worker-stats?id=x"),
        Sent("POST", "/lb/worker-stats?id=x", b"{}", route="not-admin"),
    ),
    case(
        "admin-membership-smuggled-cl",
        post(
            b"Connection: content-length",
            cl(len(get(b"/lb/membership"))),
            body=get(b"/lb/membership"),
        ),
        Sent("POST", "/p", get(b"/lb/membership")),
    ),
]

"""The vocabulary of the request-smuggling corpus (``smuggling_corpus``): what a payload is,
what the client meant by it, and the pieces payloads are made of."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tests.http.wire import chunked

OWN_XFF = "127.0.0.1"  # the balancer's view of the test client
Route = Literal["any", "admin", "not-admin"]
Write = Literal["bytes", "lines", "head"]


@dataclass(frozen=True)
class Sent:
    method: str
    target: str  # as the replica must see it (origin-form)
    body: bytes = b""
    host: str | None = "a"  # None: any one Host
    xff: tuple[str, ...] = (OWN_XFF,)  # acceptable X-Forwarded-For values at the replica
    route: Route = "any"


@dataclass(frozen=True)
class Case:
    id: str
    payload: bytes
    sent: tuple[Sent, ...] = ()
    forwarded: int = 0
    writes: tuple[Write, ...] = ()
    open_body: bool = False


def msg(*lines: bytes, body: bytes = b"") -> bytes:
    """Lines joined with CRLF, the blank line, then ``body``."""
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def post(*fields: bytes, body: bytes = b"", target: bytes = b"/p") -> bytes:
    return msg(b"POST " + target + b" HTTP/1.1", b"Host: a", *fields, body=body)


def get(target: bytes = b"/g", *fields: bytes) -> bytes:
    return msg(b"GET " + target + b" HTTP/1.1", b"Host: a", *fields)


def case(id: str, payload: bytes, *sent: Sent, forwarded: int = 0, **kw: object) -> Case:
    return Case(id, payload, tuple(sent), forwarded, **kw)  # type: ignore[arg-type]


def cl(n: int) -> bytes:
    return b"Content-Length: %d" % n


SMUGGLED = get(b"/SMUGGLED")
SMUG = Sent("GET", "/SMUGGLED")
G = Sent("GET", "/g")
TE = b"Transfer-Encoding: chunked"
HELLO = chunked(b"hello")  # 5\r\nhello\r\n0\r\n\r\n
P_HELLO = Sent("POST", "/p", b"hello")
P_EMPTY = Sent("POST", "/p")
CL_TE_BODY = b"0\r\n\r\n" + SMUGGLED  # under TE: an empty body, then a second request
TE_CL_BODY = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)  # under CL 4: "XX\r\n" only
BYTES: tuple[Write, ...] = ("bytes",)
ALL: tuple[Write, ...] = ("bytes", "lines", "head")

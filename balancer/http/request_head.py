"""What a request head may be, and how the data path rewrites it: pure rules, no I/O.

Owns the limits of a request head (target, field line, field count), the table of what the
data path does with each request field (``header_actions``), the framing rules checked before
any byte of a request goes upstream (``check_framing``: one Content-Length or a Transfer-Encoding
of exactly chunked), the rewrite of absolute-form targets to origin-form (``origin_form``), the
fields ``Connection`` may never remove, and which paths go to the admin app (``is_admin``).
The exceptions are raised inside httptools callbacks; ``CALLBACK_STATUS`` maps them to answers.
Must not import: asyncio, aiohttp, httptools, redis, docker, or project modules other than
``balancer.http.framing``.
"""

from __future__ import annotations

import re

from balancer.http.framing import HOP_BY_HOP

ADMIN_PREFIXES = (b"/rep", b"/add", b"/rm", b"/lb/", b"/metrics", b"/ui")
# Paths of the primary's internal socket, which only its worker processes reach (the membership
# document carries a keyed hash's secret seed). The admin app does not serve them at all
# (balancer.api.internal); on the public port they are ordinary paths, sent to the replicas.
WORKER_ONLY = (b"/lb/worker-stats", b"/lb/membership")
# Every method of these paths goes to the admin app (one it does not serve: 405 with Allow),
# except GET and HEAD of /add and /rm: the contract's GET /<path> sends those to a replica.
ADMIN_PATHS = frozenset({b"/rep", b"/add", b"/rm", b"/metrics", b"/ui"})
FORWARDED_GETS = frozenset(
    {(b"/add", b"GET"), (b"/add", b"HEAD"), (b"/rm", b"GET"), (b"/rm", b"HEAD")}
)
# Limits of a request head besides its size (Frontend.max_head_bytes, else 431): the request
# target (else 414), one field line and the number of field lines (else 431). Just below those
# of aiohttp's parser (8190 bytes, 128 fields), so the admin app (and aiohttp replicas) never
# refuse a head the data path forwarded, in a shape other than the contract's.
MAX_TARGET_BYTES = 8000
MAX_FIELD_BYTES = 8000
MAX_FIELDS = 100
# Only public /lb/ paths in their plain spelling reach the admin app: aiohttp decodes %-escapes
# and drops a #fragment, so "/lb/%6Dembership" would otherwise reach a WORKER_ONLY route.
_PLAIN_ADMIN_PATH = re.compile(rb"/lb/[A-Za-z0-9_-][A-Za-z0-9._-]*")

# A request head that needs more than forwarding as received plus X-Forwarded-For: a body or
# its framing, hop-by-hop fields, an incoming X-Forwarded-For, Expect. Such heads take the
# full path (httptools callbacks per field); all others take ClientConn._fast_path.
NEEDS_FULL_PATH = re.compile(
    rb"\r\n(?:connection|keep-alive|proxy-[a-z-]*|te|trailer|transfer-encoding|upgrade"
    rb"|content-length|x[-_]forwarded[-_]for|expect)[ \t]*:"
)
# X-Forwarded-For spelt with underscores: replicas that map fields to CGI/WSGI names
# (HTTP_X_FORWARDED_FOR) would take it for the balancer's own, so it is dropped (nginx drops
# every field with an underscore by default).
SPOOFS_XFF = frozenset({b"x_forwarded_for", b"x-forwarded_for", b"x_forwarded-for"})
# A Host value (RFC 9112 §3.2, RFC 3986 §3.2.2): an IP literal or a reg-name (percent-encoded
# bytes allowed), then an optional port. Anything else (a path, userinfo, spaces) is a 400.
_HOST_CHARS = rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?"
_HOST_VALUE = re.compile(_HOST_CHARS)
# The Host line of a lower-cased head whose value is valid (one search, no slicing: the fast path)
VALID_HOST_LINE = re.compile(rb"\r\nhost:[ \t]*" + _HOST_CHARS + rb"[ \t]*\r\n")


def valid_host(value: bytes) -> bool:
    """Whether ``value`` may be a Host field value (empty is allowed: RFC 9112 §3.2)."""
    return _HOST_VALUE.fullmatch(value) is not None


# What the data path does with a request header (absent from the table: forward it).
DROP, CAPTURE, LIST, XFF, HOST, LENGTH = range(6)
# Fields that frame or address the request: never removed because Connection names them
# (RFC 9110 §7.6.1 lets a client name any field; a proxy that obeys it for these desyncs).
NEVER_NAMED = frozenset({b"content-length", b"transfer-encoding", b"host"})


def header_actions(key_headers: frozenset[bytes]) -> dict[bytes, int]:
    actions = dict.fromkeys(HOP_BY_HOP, DROP)
    actions[b"connection"] = actions[b"transfer-encoding"] = LIST
    actions[b"x-forwarded-for"] = XFF
    actions[b"host"] = HOST  # exactly one is required (RFC 9112 §3.2)
    # The body's length is forwarded as the value llhttp parsed (one canonical line), so the
    # replica frames the body exactly as the balancer did.
    actions[b"content-length"] = LENGTH
    for name in key_headers:
        actions.setdefault(name, CAPTURE)
    return actions


class HeadTooLarge(Exception):
    """Raised inside a parser callback: the request head exceeds a limit (→ 431)."""


class MalformedHead(Exception):
    """Raised inside a parser callback: a head llhttp accepts that is still not valid (→ 400)."""


class TargetTooLong(Exception):
    """Raised inside a parser callback: the request target exceeds its limit (→ 414)."""


class CodingNotImplemented(Exception):
    """Raised inside a parser callback: a transfer coding other than chunked (→ 501)."""


CALLBACK_STATUS: dict[type[BaseException], int] = {
    HeadTooLarge: 431,
    TargetTooLong: 414,
    CodingNotImplemented: 501,
}


def check_size(url: bytes, fields: list[bytes], unlisted: int, max_head_bytes: int) -> None:
    """The limits of a parsed head: ``fields`` are the kept field lines (with CRLF),
    ``unlisted`` the number of others.

    Raises:
        HeadTooLarge (431), TargetTooLong (414).
    """
    size = len(url) + sum(map(len, fields))
    if size > max_head_bytes or len(fields) + unlisted > MAX_FIELDS:
        raise HeadTooLarge
    if size > MAX_FIELD_BYTES:  # else no line can be over its limit
        if len(url) > MAX_TARGET_BYTES:
            raise TargetTooLong
        if max(map(len, fields), default=0) > MAX_FIELD_BYTES + 2:  # + CRLF
            raise HeadTooLarge


def check_framing(*, http10: bool, coding: bytes | None) -> None:
    """Refuse a body framing before any byte of the request goes upstream: any coding on
    HTTP/1.0 (RFC 9112 §6.1: faulty framing) or a list that does not end in one chunked
    (400), codings other than chunked, which replicas rarely understand (501, as nginx).
    llhttp already refuses two Content-Length lines and Content-Length with a coding.

    Raises:
        MalformedHead, CodingNotImplemented.
    """
    if coding is None:
        return
    if http10 or not _valid_codings(coding):
        raise MalformedHead
    if coding.strip() != b"chunked":
        raise CodingNotImplemented


def origin_form(method: bytes, url: bytes) -> tuple[bytes, bytes | None]:
    """The origin-form of a request target that is not one (RFC 9112 §3.2), and the authority
    that replaces Host (None: keep it): an absolute-form target becomes its path and query;
    ``OPTIONS *`` stays. Anything else (authority-form, CONNECT, other schemes, userinfo) is
    refused.

    Raises:
        MalformedHead.
    """
    if url == b"*" and method == b"OPTIONS":
        return url, None
    lower = url.lower()
    if not lower.startswith((b"http://", b"https://")) or method == b"CONNECT":
        raise MalformedHead
    rest = url[lower.find(b"://") + 3 :]
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if not authority or not valid_host(authority):  # no userinfo (RFC 9110 §4.2.4), no junk
        raise MalformedHead
    return (path if path.startswith(b"/") else b"/" + path), authority


_CODING = re.compile(rb"[!#$%&'*+.^_`|~0-9a-z-]+")  # a token, lower-cased (RFC 9110 §5.6.2)


def _valid_codings(value: bytes) -> bool:
    """A request's Transfer-Encoding list (lower-cased, comma-joined): tokens without
    parameters, chunked exactly once and last (RFC 9112 §6.1)."""
    codings = [c.strip() for c in value.split(b",")]
    return (
        codings[-1] == b"chunked"
        and codings.count(b"chunked") == 1
        and all(_CODING.fullmatch(c) for c in codings)
    )


def is_admin(url: bytes, method: bytes) -> bool:
    """Whether a request for ``url`` (which starts with an admin prefix) goes to the admin app
    rather than to the replicas."""
    path = url.split(b"?", 1)[0]
    if path in ADMIN_PATHS:
        return (path, method) not in FORWARDED_GETS
    return path not in WORKER_ONLY and _PLAIN_ADMIN_PATH.fullmatch(path) is not None

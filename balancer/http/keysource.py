"""Where a request's routing key comes from.

Owns ``parse_key_sources`` and ``RawKeyExtractor``. A key source list such as
``query:id,header:x-request-id`` is tried in order; the first present, non-empty value is the key.
When none is present the key is a random 6-digit request id, as the assignment's clients assume.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal
from urllib.parse import unquote_to_bytes

from balancer.errors import ConfigError

SourceKind = Literal["query", "header", "cookie", "ip", "path"]
KeySpec = tuple[SourceKind, str]
_NAMED: tuple[SourceKind, ...] = ("query", "header", "cookie")
_BARE: tuple[SourceKind, ...] = ("ip", "path")


def parse_key_sources(text: str) -> tuple[KeySpec, ...]:
    """Parse ``kind[:name],…``; an empty string means "always a random id".

    Raises:
        ConfigError: on an unknown kind or a missing/extra name.
    """
    specs: list[KeySpec] = []
    for raw in filter(None, (part.strip() for part in text.split(","))):
        kind, _, name = raw.partition(":")
        if kind in _NAMED and name:
            specs.append((kind, name))
        elif kind in _BARE and not name:
            specs.append((kind, ""))
        else:
            raise ConfigError(
                f"bad key source {raw!r}: use query:<name>, header:<name>, cookie:<name>, ip, path"
            )
    return tuple(specs)


Getter = Callable[[bytes, dict[bytes, bytes], str], "bytes | None"]


class RawKeyExtractor:
    """Routing key from raw request parts, as the fast data path sees them.

    ``header_names`` lists the lower-case header names the data path must capture (cookie
    included when a cookie source is configured); ``key(url, captured, peer)`` then tries the
    sources in order. Values are percent-decoded the way a web framework would, so a key sent
    encoded and unencoded routes the same. Each source is compiled once into a small function,
    so a request pays for no parsing of the configuration.
    """

    __slots__ = ("_getters", "_rng", "header_names")

    def __init__(self, specs: tuple[KeySpec, ...], rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._getters: tuple[Getter, ...] = tuple(_getter(kind, name) for kind, name in specs)
        names = {name.lower().encode() for kind, name in specs if kind == "header"}
        if any(kind == "cookie" for kind, _ in specs):
            names.add(b"cookie")
        self.header_names = frozenset(names)

    def random_id(self) -> str:
        return str(self._rng.randrange(100_000, 1_000_000))

    def key(self, url: bytes, captured: dict[bytes, bytes], peer: str) -> str:
        for getter in self._getters:
            value = getter(url, captured, peer)
            if value:
                return value.decode("utf-8", "replace")
        return self.random_id()


def _getter(kind: SourceKind, name: str) -> Getter:
    raw = name.encode()
    if kind == "query":
        needle = raw + b"="

        def query(url: bytes, captured: dict[bytes, bytes], peer: str) -> bytes | None:
            return query_value(url, needle) if needle in url else None

        return query
    if kind == "header":
        lower = raw.lower()
        return lambda url, captured, peer: captured.get(lower)
    if kind == "cookie":
        return lambda url, captured, peer: cookie_value(captured.get(b"cookie"), raw)
    if kind == "ip":
        return lambda url, captured, peer: peer.encode() if peer else None
    return lambda url, captured, peer: _decode(url.split(b"?", 1)[0])


def query_value(url: bytes, needle: bytes) -> bytes | None:
    """The first value of query parameter ``needle`` (``b"name="``) in a target, decoded."""
    q = url.find(b"?")
    if q < 0:
        return None
    pos = url.find(needle, q + 1)
    while pos >= 0:
        if url[pos - 1] in b"?&":
            start = pos + len(needle)
            end = url.find(b"&", start)
            return _decode(url[start:] if end < 0 else url[start:end])
        pos = url.find(needle, pos + 1)
    return None


def cookie_value(header: bytes | None, name: bytes) -> bytes | None:
    if not header:
        return None
    for part in header.split(b";"):
        k, sep, v = part.strip().partition(b"=")
        if sep and k == name:
            return v.strip(b'"')
    return None


def _decode(value: bytes) -> bytes:
    if b"%" in value or b"+" in value:
        return unquote_to_bytes(value.replace(b"+", b" "))
    return value

"""Where a request's routing key comes from.

Owns ``parse_key_sources`` and ``RawKeyExtractor``. A key source list such as
``query:id,header:x-request-id`` is tried in order; the first present, non-empty value is the key.
When none is present the key is a random 6-digit request id, as the assignment's clients assume.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import random
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


class RawKeyExtractor:
    """Routing key from raw request parts, as the fast data path sees them.

    ``header_names`` lists the lower-case header names the data path must capture (cookie
    included when a cookie source is configured); ``key(url, captured, peer)`` then walks the
    sources in order. Values are percent-decoded the way a web framework would, so a key sent
    encoded and unencoded routes the same.
    """

    __slots__ = ("_plan", "_rng", "header_names")

    def __init__(self, specs: tuple[KeySpec, ...], rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._plan = [
            (kind, name.lower().encode() if kind == "header" else name.encode())
            for kind, name in specs
        ]
        names = {n for kind, n in self._plan if kind == "header"}
        if any(kind == "cookie" for kind, _ in self._plan):
            names.add(b"cookie")
        self.header_names = frozenset(names)

    def random_id(self) -> str:
        return str(self._rng.randrange(100_000, 1_000_000))

    def key(self, url: bytes, captured: dict[bytes, bytes], peer: str) -> str:
        for kind, name in self._plan:
            value: bytes | None
            if kind == "query":
                value = query_value(url, name)
            elif kind == "header":
                value = captured.get(name)
            elif kind == "cookie":
                value = cookie_value(captured.get(b"cookie"), name)
            elif kind == "ip":
                return peer or self.random_id()
            else:
                value = _decode(url.split(b"?", 1)[0])
            if value:
                return value.decode("utf-8", "replace")
        return self.random_id()


def query_value(url: bytes, name: bytes) -> bytes | None:
    """The first value of query parameter ``name`` in a request target, percent-decoded."""
    q = url.find(b"?")
    if q < 0:
        return None
    needle = name + b"="
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

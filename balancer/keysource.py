"""Where a request's routing key comes from.

Owns ``parse_key_sources`` and ``KeyExtractor``. A key source list such as
``query:id,header:x-request-id`` is tried in order; the first present, non-empty value is the key.
When none is present the key is a random 6-digit request id, as the assignment's clients assume.
Must not import: redis, docker.
"""

from __future__ import annotations

import random
from typing import Literal

from aiohttp import web

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


class KeyExtractor:
    """Callable: request → routing key (see the module docstring)."""

    def __init__(self, specs: tuple[KeySpec, ...], rng: random.Random | None = None) -> None:
        self._specs = specs
        self._rng = rng or random.Random()

    def random_id(self) -> str:
        return str(self._rng.randint(100_000, 999_999))

    def __call__(self, request: web.BaseRequest) -> str:
        for kind, name in self._specs:
            value: str | None
            if kind == "query":
                value = request.query.get(name)
            elif kind == "header":
                value = request.headers.get(name)
            elif kind == "cookie":
                value = request.cookies.get(name)
            elif kind == "ip":
                value = request.remote
            else:
                value = request.path
            if value:
                return value
        return self.random_id()

"""Weighted rendezvous (highest random weight) hashing.

Owns: ``RendezvousRing``. Every member scores every key with ``-weight / ln(u)``, where ``u`` in
(0, 1) comes from ``hash(key, member)``; the highest score owns the key (the logarithmic method
for weights, Schindelhauer & Schomaker). Balance and movement are ideal in expectation (a change
moves only the keys the changed member gains or loses), but a lookup costs one hash per member,
so it suits small N.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from balancer.hashing.base import Member, NoReplicasError, checked_members
from balancer.hashing.hashes import HashFn

_TWO_52 = float(2**52)  # u = (top 52 bits + 0.5) / 2**52 is exact and strictly inside (0, 1)


class RendezvousRing:
    """Immutable weighted HRW over a member set (see the module docstring)."""

    __slots__ = ("_hash", "_live", "_members")

    def __init__(self, members: Iterable[Member], hash_fn: HashFn) -> None:
        live = [m for m in checked_members(members) if m.weight > 0]
        self._hash = hash_fn
        self._live = [(m.name.encode() + b"\x00", m.name, float(m.weight)) for m in live]
        self._members = tuple(m.name for m in live)

    @property
    def members(self) -> tuple[str, ...]:
        return self._members

    def lookup(self, key: str) -> str:
        return self.candidates(key, 1)[0]

    def candidates(self, key: str, count: int) -> list[str]:
        if not self._live:
            raise NoReplicasError("the ring is empty")
        k = key.encode()
        h = self._hash
        scored = sorted(
            (
                (-w / math.log(((h(prefix + k) >> 12) + 0.5) / _TWO_52), name)
                for prefix, name, w in self._live
            ),
            reverse=True,
        )
        return [name for _, name in scored[: max(0, count)]]

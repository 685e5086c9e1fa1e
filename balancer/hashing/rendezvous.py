"""Weighted rendezvous (highest random weight) hashing.

Owns: ``RendezvousRing`` and ``mix64``. Every member scores every key with ``-weight / ln(u)``,
where ``u`` in (0, 1) comes from (key, member); the highest score owns the key (the logarithmic
method for weights, Schindelhauer & Schomaker). Balance and movement are ideal in expectation (a
change moves only the keys the changed member gains or loses).

The key is hashed once per lookup; each member's ``u`` is then ``mix64(hash(key) ^ salt)``, a
splitmix64 finalizer (a bijective 64-bit mix with full avalanche) of the key hash and the
member's salt, ``hash(name + b"\\0")``. A lookup therefore costs one hash plus a few integer
operations per member (still O(N), so it suits small N), and the arithmetic is plain 64-bit
integer work that ``balancer.hashing.report`` mirrors with numpy for million-key measurements.
When every live member has the same weight, ``-w / ln(u)`` orders members exactly as ``u`` does
(it is increasing in ``u``), so the 52-bit numerator of ``u`` is compared directly: the same
order without ``ln``'s rounding, and cheaper. Ties (astronomically rare) go to the greater name.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from balancer.hashing.base import Member, NoReplicasError, checked_members
from balancer.hashing.hashes import HashFn

MASK64 = (1 << 64) - 1
# splitmix64's finalizer (Steele, Lea & Flood 2014; Stafford's "Mix13" constants).
SHIFT_1, MULTIPLIER_1 = 30, 0xBF58_476D_1CE4_E5B9
SHIFT_2, MULTIPLIER_2 = 27, 0x94D0_49BB_1331_11EB
SHIFT_3 = 31
U_SHIFT = 12  # u = (top 52 bits + 0.5) / 2**52 is exact and strictly inside (0, 1)
_TWO_52 = float(2**52)


def mix64(x: int) -> int:
    """splitmix64's finalizer: a bijection of [0, 2**64) in which every input bit flips every
    output bit with probability about 1/2."""
    x = ((x ^ (x >> SHIFT_1)) * MULTIPLIER_1) & MASK64
    x = ((x ^ (x >> SHIFT_2)) * MULTIPLIER_2) & MASK64
    return x ^ (x >> SHIFT_3)


def weighted_score(bits: int, weight: float) -> float:
    """``-weight / ln(u)`` for ``u = (bits + 0.5) / 2**52``, ``bits`` a 52-bit integer."""
    return -weight / math.log((bits + 0.5) / _TWO_52)


class RendezvousRing:
    """Immutable weighted HRW over a member set (see the module docstring)."""

    __slots__ = ("_equal", "_hash", "_live", "_members")

    def __init__(self, members: Iterable[Member], hash_fn: HashFn) -> None:
        live = [m for m in checked_members(members) if m.weight > 0]
        self._hash = hash_fn
        self._live = tuple(
            (hash_fn(m.name.encode() + b"\x00"), m.name, float(m.weight)) for m in live
        )
        self._equal = len({m.weight for m in live}) <= 1
        self._members = tuple(m.name for m in live)

    @property
    def members(self) -> tuple[str, ...]:
        return self._members

    @property
    def scoring(self) -> tuple[tuple[str, int, float], ...]:
        """(name, salt, weight) of every live member, in name order: all a score depends on."""
        return tuple((name, salt, weight) for salt, name, weight in self._live)

    @property
    def equal_weights(self) -> bool:
        """True when members are ranked by ``u`` alone (see the module docstring)."""
        return self._equal

    def key_hash(self, key: str) -> int:
        """The one hash of ``key`` that every member's score starts from."""
        return self._hash(key.encode())

    def lookup(self, key: str) -> str:
        return self.lookup_hash(self._hash(key.encode()))

    def lookup_hash(self, key_hash: int) -> str:
        """The owner of a key whose ``key_hash`` is given."""
        return max(self._scores(key_hash))[1]

    def candidates(self, key: str, count: int) -> list[str]:
        scored = self._scores(self._hash(key.encode()))
        scored.sort(reverse=True)
        return [name for _, name in scored[: max(0, count)]]

    def _scores(self, key_hash: int) -> list[tuple[float, str]]:
        """(score, name) per member; a higher score (then a greater name) ranks first."""
        if not self._live:
            raise NoReplicasError("the ring is empty")
        if self._equal:  # the 52-bit numerator of u: an int, compared exactly
            return [(mix64(key_hash ^ salt) >> U_SHIFT, name) for salt, name, _ in self._live]
        return [
            (weighted_score(mix64(key_hash ^ salt) >> U_SHIFT, w), name)
            for salt, name, w in self._live
        ]

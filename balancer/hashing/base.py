"""The one interface every request-to-replica algorithm implements.

Owns: ``Member`` (what a ring is built from), ``RingSettings`` (the knobs), the ``Ring`` protocol
and ``NoReplicasError``. A ring is immutable: a membership change builds a new one.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client, or modules outside
``balancer.hashing``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from balancer.hashing.hashes import DEFAULT_SEED, HashName

Algorithm = Literal["slots", "ring", "assignment", "maglev", "rendezvous"]
ALGORITHMS: tuple[Algorithm, ...] = ("slots", "ring", "assignment", "maglev", "rendezvous")
Probing = Literal["linear", "quadratic"]
PROBINGS: tuple[Probing, ...] = ("linear", "quadratic")


class NoReplicasError(LookupError):
    """The ring has no members, so no key has an owner."""


@dataclass(frozen=True, order=True)
class Member:
    """One replica as the ring sees it.

    ``index`` is the replica's small positive integer id (the assignment's server number ``i``),
    assigned once when the replica joins and never reused while it is a member. ``weight`` is the
    number of weight units (0 = drain: the replica gets no keys).
    """

    name: str
    index: int = 0
    weight: int = 1


@dataclass(frozen=True)
class RingSettings:
    """Everything besides the member set that decides where a key goes."""

    algorithm: Algorithm = "slots"
    hash_name: HashName = "xxh3"
    hash_seed: int = field(default=DEFAULT_SEED, repr=False)  # may be a secret (siphash key)
    points_per_weight: int = 160
    slots: int = 512
    vnodes: int = 9
    probing: Probing = "linear"
    # Bounded loads (``balancer.hashing.bounded``): 0 = off, else c >= 1, a request leaves its
    # owner for the next candidate while the owner has ceil(c × (in flight + 1) / members) in
    # flight. Decides per request, not per ring: no ring is built differently for it.
    balance_factor: float = 0.0


def checked_members(members: Iterable[Member]) -> list[Member]:
    """``members`` sorted by name, the order every ring is built in.

    Raises:
        ValueError: on a duplicate name or a negative weight.
    """
    by_name: dict[str, Member] = {}
    for member in members:
        if member.name in by_name:
            raise ValueError(f"duplicate member names: {member.name!r}")
        if member.weight < 0:
            raise ValueError(f"negative weight for {member.name!r}")
        by_name[member.name] = member
    return [by_name[name] for name in sorted(by_name)]


class Ring(Protocol):
    """Maps a request key to replica names. Implementations are immutable and pure."""

    @property
    def members(self) -> tuple[str, ...]:
        """Names of the members that can own keys, sorted."""
        ...

    def lookup(self, key: str) -> str:
        """Return the owner of ``key``.

        Raises:
            NoReplicasError: when no member can own keys.
        """
        ...

    def candidates(self, key: str, count: int) -> list[str]:
        """Return up to ``count`` distinct members in preference order, owner first.

        The members after the owner are where the key goes if the owner is unavailable, so a
        retry lands on the same replica from every balancer instance.
        """
        ...

"""Request-key → replica algorithms behind one interface (pure: no I/O).

Owns: ``build_ring``, the single place that turns (members, settings) into a ``Ring``.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client, or project modules outside
this package.
"""

from __future__ import annotations

from collections.abc import Iterable

from balancer.hashing.assignment import AssignmentRing
from balancer.hashing.base import (
    ALGORITHMS,
    PROBINGS,
    Algorithm,
    Member,
    NoReplicasError,
    Probing,
    Ring,
    RingSettings,
)
from balancer.hashing.hashes import HASH_NAMES, HashName, make_hash
from balancer.hashing.maglev import MaglevRing
from balancer.hashing.rendezvous import RendezvousRing
from balancer.hashing.ring import HashRing

__all__ = [
    "ALGORITHMS",
    "HASH_NAMES",
    "PROBINGS",
    "Algorithm",
    "AssignmentRing",
    "HashName",
    "HashRing",
    "MaglevRing",
    "Member",
    "NoReplicasError",
    "Probing",
    "RendezvousRing",
    "Ring",
    "RingSettings",
    "build_ring",
    "make_hash",
]


def build_ring(members: Iterable[Member], settings: RingSettings) -> Ring:
    """Build the ring ``settings.algorithm`` names from ``members``.

    The result depends only on the member set (not its order) and on ``settings``.
    """
    hash_fn = make_hash(settings.hash_name, settings.hash_seed)
    if settings.algorithm == "assignment":
        return AssignmentRing(members, hash_fn, settings.slots, settings.vnodes, settings.probing)
    if settings.algorithm == "maglev":
        return MaglevRing(members, hash_fn)
    if settings.algorithm == "rendezvous":
        return RendezvousRing(members, hash_fn)
    return HashRing(members, hash_fn, settings.points_per_weight)

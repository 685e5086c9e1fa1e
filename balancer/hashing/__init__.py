"""Request-key → replica algorithms behind one interface (pure: no I/O).

Owns: ``build_ring``, the single place that turns (members, settings, ring state) into a
``Ring``, and ``next_state``, which carries an algorithm's state across a membership change.
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
from balancer.hashing.slots import SlotRing, decode

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
    "SlotRing",
    "build_ring",
    "make_hash",
    "next_state",
]


def build_ring(members: Iterable[Member], settings: RingSettings, state: str = "") -> Ring:
    """Build the ring ``settings.algorithm`` names from ``members``.

    Args:
        state: what ``next_state`` returned for exactly these members (only the ``slots``
            algorithm has state; an empty or mismatched state builds from nothing).

    The result depends only on the member set (not its order), ``settings`` and ``state``.
    """
    members = list(members)
    hash_fn = make_hash(settings.hash_name, settings.hash_seed)
    if settings.algorithm == "slots":
        return SlotRing(members, hash_fn, decode(state, members))
    if settings.algorithm == "assignment":
        return AssignmentRing(members, hash_fn, settings.slots, settings.vnodes, settings.probing)
    if settings.algorithm == "maglev":
        return MaglevRing(members, hash_fn)
    if settings.algorithm == "rendezvous":
        return RendezvousRing(members, hash_fn)
    return HashRing(members, hash_fn, settings.points_per_weight)


def next_state(
    old_members: Iterable[Member],
    old_state: str,
    new_members: Iterable[Member],
    settings: RingSettings,
) -> str:
    """The ring state to store with ``new_members``, derived from the state stored with
    ``old_members`` so that the change moves as few keys as the algorithm allows.

    Stateless algorithms return "". Pure: every instance derives the same state.
    """
    if settings.algorithm != "slots":
        return ""
    old = list(old_members)
    previous = decode(old_state, old)
    ring = SlotRing(new_members, make_hash(settings.hash_name, settings.hash_seed), previous)
    return ring.encoded()

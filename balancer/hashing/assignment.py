"""The assignment's literal hash scheme, kept for compatibility and for analysis A-4.

Owns: ``AssignmentRing``. A circular array of ``M`` slots; virtual server ``j`` of server ``i``
sits at ``Φ(i, j) = i² + j² + 2j + 25 (mod M)``; a request id ``Rid`` maps to
``H(Rid) = Rid² + 2·Rid + 17 (mod M)`` and goes to the nearest virtual server clockwise
(the first occupied slot at or after its own). A virtual server whose slot is taken probes
linearly (s+1, s+2, …) or quadratically (s+1², s+2², …); one that finds no free slot within
``M`` probes is left out (counted in ``unplaced``). Servers are placed in ascending
(index, name) order, all ``K`` virtual servers of one server before the next server.

A key that is a decimal number (up to 18 digits) is its own ``Rid``; any other key is mapped to a
6-digit ``Rid`` by the ring's fixed-seed hash, so every key source works in this mode.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client.
"""

from __future__ import annotations

from collections.abc import Iterable

from balancer.hashing.base import Member, NoReplicasError, Probing, checked_members
from balancer.hashing.hashes import HashFn

_MAX_RID_DIGITS = 18


def request_slot(rid: int, slots: int) -> int:
    """H(Rid) = Rid² + 2·Rid + 17, reduced modulo the number of slots."""
    return (rid * rid + 2 * rid + 17) % slots


def vnode_slot(index: int, vnode: int, slots: int) -> int:
    """Φ(i, j) = i² + j² + 2j + 25, reduced modulo the number of slots."""
    return (index * index + vnode * vnode + 2 * vnode + 25) % slots


class AssignmentRing:
    """The literal scheme (see the module docstring)."""

    __slots__ = ("_hash", "_members", "_next_owner", "slot_owner", "slots", "unplaced")

    def __init__(
        self, members: Iterable[Member], hash_fn: HashFn, slots: int, vnodes: int, probing: Probing
    ) -> None:
        """Place every virtual server.

        Args:
            members: replicas with their ``index`` (the formula's ``i``, a positive integer);
                members with weight 0 are not placed.
            hash_fn: maps non-numeric keys to a request id.
            slots: ``M``, at least 1.
            vnodes: ``K``, virtual servers per server, at least 1.
            probing: how a virtual server resolves a taken slot.

        Raises:
            ValueError: on bad sizes, duplicate names or duplicate indexes.
        """
        if slots < 1 or vnodes < 1:
            raise ValueError("slots and vnodes must be at least 1")
        live = [m for m in checked_members(members) if m.weight > 0]
        placed = sorted(live, key=lambda m: (m.index, m.name))
        if len({m.index for m in placed}) != len(placed):
            raise ValueError("duplicate member indexes: the assignment scheme needs distinct i")
        self.slots = slots
        self.slot_owner: list[str | None] = [None] * slots
        self.unplaced = 0
        for member in placed:
            for j in range(vnodes):
                slot = _probe(self.slot_owner, vnode_slot(member.index, j, slots), probing)
                if slot is None:
                    self.unplaced += 1
                else:
                    self.slot_owner[slot] = member.name
        self._hash = hash_fn
        self._members = tuple(sorted({n for n in self.slot_owner if n is not None}))
        self._next_owner = _clockwise_table(self.slot_owner)

    @property
    def members(self) -> tuple[str, ...]:
        return self._members

    def request_id(self, key: str) -> int:
        """The ``Rid`` of a key: the key itself when it is a decimal number (of at most 18
        digits: a longer one is hashed like any other key, never parsed), else a 6-digit id."""
        if len(key) <= _MAX_RID_DIGITS and key.isdecimal() and key.isascii():
            return int(key)
        return 100_000 + self._hash(key.encode()) % 900_000

    def lookup(self, key: str) -> str:
        if not self._members:
            raise NoReplicasError("no virtual server is placed")
        owner = self._next_owner[request_slot(self.request_id(key), self.slots)]
        assert owner is not None  # a placed member exists, so every slot has a clockwise owner
        return owner

    def candidates(self, key: str, count: int) -> list[str]:
        if not self._members:
            raise NoReplicasError("no virtual server is placed")
        want = min(count, len(self._members))
        if want <= 0:
            return []
        start = request_slot(self.request_id(key), self.slots)
        found: list[str] = []
        for step in range(self.slots):
            name = self.slot_owner[(start + step) % self.slots]
            if name is not None and name not in found:
                found.append(name)
                if len(found) == want:
                    break
        return found


def _probe(owner: list[str | None], start: int, probing: Probing) -> int | None:
    size = len(owner)
    for attempt in range(size):
        offset = attempt if probing == "linear" else attempt * attempt
        slot = (start + offset) % size
        if owner[slot] is None:
            return slot
    return None


def _clockwise_table(owner: list[str | None]) -> list[str | None]:
    """For every slot, the owner of the first occupied slot at or after it (wrapping)."""
    size = len(owner)
    table: list[str | None] = [None] * size
    current: str | None = next((o for o in owner if o is not None), None)
    # Walk backwards twice round the circle so the wrap-around slots see the first owner.
    for step in range(2 * size - 1, -1, -1):
        slot = step % size
        if owner[slot] is not None:
            current = owner[slot]
        table[slot] = current
    return table

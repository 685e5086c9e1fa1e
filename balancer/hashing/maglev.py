"""Maglev hashing (Eisenbud et al., NSDI 2016): a lookup table filled by member permutations.

Owns: ``MaglevRing``. Each member has a permutation of the ``table_size`` slots (a prime), given
by an offset and a skip from two hashes of its name; members take turns claiming their next
unclaimed preferred slot, ``weight`` turns per round, until every slot has an owner. A key goes
to ``table[hash(key) % table_size]``: one hash and one index, whatever N is. Balance is within
about 1% of ideal for N ≪ table size; a membership change moves somewhat more than the ideal
share of keys (the paper's trade-off). Members are taken in sorted order, so every process builds
the identical table.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client.
"""

from __future__ import annotations

from collections.abc import Iterable

from balancer.hashing.base import Member, NoReplicasError, checked_members
from balancer.hashing.hashes import HashFn

DEFAULT_TABLE_SIZE = 65_537  # prime, as the permutations need


class MaglevRing:
    """An immutable Maglev lookup table (see the module docstring)."""

    __slots__ = ("_hash", "_members", "_size", "table")

    def __init__(
        self, members: Iterable[Member], hash_fn: HashFn, table_size: int = DEFAULT_TABLE_SIZE
    ) -> None:
        live = [m for m in checked_members(members) if m.weight > 0]
        self._hash = hash_fn
        self._size = table_size
        self._members = tuple(m.name for m in live)
        self.table: list[str] = _populate(live, hash_fn, table_size) if live else []

    @property
    def members(self) -> tuple[str, ...]:
        return self._members

    def lookup(self, key: str) -> str:
        if not self.table:
            raise NoReplicasError("the ring is empty")
        return self.table[self._hash(key.encode()) % self._size]

    def candidates(self, key: str, count: int) -> list[str]:
        """The owner, then the next distinct owners walking the table from the key's slot."""
        if not self.table:
            raise NoReplicasError("the ring is empty")
        want = min(count, len(self._members))
        found: list[str] = []
        start = self._hash(key.encode()) % self._size
        for step in range(self._size):
            if len(found) >= want:
                break
            name = self.table[(start + step) % self._size]
            if name not in found:
                found.append(name)
        return found


def _populate(members: list[Member], hash_fn: HashFn, size: int) -> list[str]:
    offsets = [hash_fn(f"{m.name}#offset".encode()) % size for m in members]
    skips = [hash_fn(f"{m.name}#skip".encode()) % (size - 1) + 1 for m in members]
    nexts = [0] * len(members)
    table: list[str | None] = [None] * size
    filled = 0
    while True:
        for i, member in enumerate(members):
            for _ in range(member.weight):
                slot = (offsets[i] + nexts[i] * skips[i]) % size
                while table[slot] is not None:
                    nexts[i] += 1
                    slot = (offsets[i] + nexts[i] * skips[i]) % size
                table[slot] = member.name
                nexts[i] += 1
                filled += 1
                if filled == size:
                    return [name for name in table if name is not None]

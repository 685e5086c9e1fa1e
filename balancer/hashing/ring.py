"""The ketama-style ring: a consistent-hash ring with a fixed number of points per weight unit.

Owns: ``HashRing``. Each member gets ``points_per_weight * weight`` points at
``hash(b"<name>#<n>")``; a key goes to the first point clockwise of ``hash(key)``. The point count
never depends on the number of members, so adding or removing one member moves only the keys
that member takes or gives up. Points are sorted by (hash, name), so two processes given the same
member set and settings build the identical ring whatever order the members arrive in.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from balancer.hashing.base import Member, NoReplicasError, checked_members
from balancer.hashing.hashes import HashFn


class HashRing:
    """An immutable ketama-style ring (see the module docstring)."""

    __slots__ = ("_hash", "_members", "owners", "points")

    def __init__(self, members: Iterable[Member], hash_fn: HashFn, points_per_weight: int) -> None:
        """Build the ring.

        Args:
            members: the replicas; duplicates by name are an error, weight 0 gets no points.
            hash_fn: a fixed-seed 64-bit hash (see ``balancer.hashing.hashes``).
            points_per_weight: ring points per weight unit, at least 1.

        Raises:
            ValueError: on duplicate names, a negative weight or ``points_per_weight < 1``.
        """
        if points_per_weight < 1:
            raise ValueError("points_per_weight must be at least 1")
        unique = checked_members(members)
        points: list[tuple[int, str]] = []
        for member in unique:
            for n in range(points_per_weight * member.weight):
                points.append((hash_fn(f"{member.name}#{n}".encode()), member.name))
        # Sorting by (hash, name) is the deterministic tie-break for two points on one hash.
        points.sort()
        self._hash = hash_fn
        self.points = [p for p, _ in points]
        self.owners = [name for _, name in points]
        self._members = tuple(sorted(m.name for m in unique if m.weight > 0))

    @property
    def members(self) -> tuple[str, ...]:
        return self._members

    def lookup(self, key: str) -> str:
        points = self.points
        if not points:
            raise NoReplicasError("the ring is empty")
        i = bisect_left(points, self._hash(key.encode()))
        return self.owners[i if i < len(points) else 0]

    def candidates(self, key: str, count: int) -> list[str]:
        points = self.points
        if not points:
            raise NoReplicasError("the ring is empty")
        want = min(count, len(self._members))
        if want <= 0:
            return []
        start = bisect_left(points, self._hash(key.encode()))
        found: list[str] = []
        owners = self.owners
        size = len(owners)
        for step in range(size):
            name = owners[(start + step) % size]
            if name not in found:
                found.append(name)
                if len(found) == want:
                    break
        return found

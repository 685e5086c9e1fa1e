"""How much of the key space a change of ring moves, and the least any algorithm could move.

Owns ``moved_share`` and ``ideal_share``. Tables (slot and Maglev) and ketama rings are compared
exactly over the whole hash space; the other algorithms over a fixed sample of keys.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from balancer.hashing.base import Member, NoReplicasError, Ring
from balancer.hashing.maglev import MaglevRing
from balancer.hashing.ring import HashRing
from balancer.hashing.slots import SlotRing

SAMPLE_KEYS = 65_536  # sampled estimate: the standard error is below 0.2 percentage points
_SPACE = 1 << 64


def ideal_share(old: Iterable[Member], new: Iterable[Member]) -> float:
    """The share of keys that must move when the members' weights go from ``old`` to ``new``:
    half the sum of every member's change in weight share (its total variation distance).
    1/(N+1) for adding one of N+1 equal members; 1 when either side is empty."""
    before = _shares(old)
    after = _shares(new)
    if not before or not after:
        return 0.0 if before == after else 1.0
    names = before.keys() | after.keys()
    return sum(abs(after.get(n, 0.0) - before.get(n, 0.0)) for n in names) / 2


def moved_share(
    old: Ring, new: Ring, *, same_hash: bool = True, sample: int = SAMPLE_KEYS
) -> float:
    """The share of the key space whose owner differs between ``old`` and ``new``.

    ``same_hash``: both were built with the same hash function and seed (then tables and rings
    are compared exactly; otherwise ``sample`` keys are compared).
    """
    if not old.members or not new.members:
        return 0.0 if old.members == new.members else 1.0
    if same_hash:
        if isinstance(old, SlotRing) and isinstance(new, SlotRing):
            return _tables_moved(old.table, new.table)
        if isinstance(old, MaglevRing) and isinstance(new, MaglevRing):
            return _tables_moved(old.table, new.table)
        if isinstance(old, HashRing) and isinstance(new, HashRing):
            return _ring_moved(old, new)
    return _sampled(old, new, sample)


def _tables_moved(a: Sequence[str], b: Sequence[str]) -> float:
    if len(a) != len(b):
        raise ValueError("tables of different sizes cannot be compared slot by slot")
    return sum(x != y for x, y in zip(a, b, strict=True)) / len(a)


def _shares(members: Iterable[Member]) -> dict[str, float]:
    weights = {m.name: m.weight for m in members if m.weight > 0}
    total = sum(weights.values())
    return {name: w / total for name, w in weights.items()}


def _ring_moved(old: HashRing, new: HashRing) -> float:
    """Exact: every point of either ring bounds an arc owned by one member in each ring."""
    bounds = sorted(set(old.points) | set(new.points))
    moved = 0
    previous = bounds[-1] - _SPACE  # the arc that wraps past zero ends at the first bound
    for point in bounds:
        if _owner_at(old, point) != _owner_at(new, point):
            moved += point - previous
        previous = point
    return moved / _SPACE


def _owner_at(ring: HashRing, point: int) -> str:
    i = bisect_left(ring.points, point)
    return ring.owners[i if i < len(ring.points) else 0]


def _sampled(old: Ring, new: Ring, sample: int) -> float:
    moved = 0
    for i in range(sample):
        key = f"movement-sample-{i}"
        try:
            moved += old.lookup(key) != new.lookup(key)
        except NoReplicasError:
            moved += 1
    return moved / sample

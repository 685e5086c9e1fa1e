"""The share of keys a membership change moves under weighted rendezvous hashing, in closed form.

Owns ``expected_moved_share``. ``RendezvousRing`` gives a key to the member with the highest
``-w / ln(u)``, ``u`` uniform per (key, member): the member with the least ``E / w``, ``E = -ln u``
exponential with mean 1, whose ``E`` is the same before and after a change (it comes from the key
and the member's name, not its weight). A key stays where it was when one member ``i`` wins
both races: every other member ``j`` needs ``E_j > E_i × max(a_j / a_i, b_j / b_i)`` (``a`` the
weights before, ``b`` after, 0 for a member absent or drained), so

    P(i keeps the key) = 1 / (1 + Σ_j≠i max(a_j / a_i, b_j / b_i))

and the moved share is 1 minus the sum over the members live on both sides. This is the share
the ring moves for an ideal hash (the ring's splitmix64 mix is one in practice): what sampling
keys estimates, without the sampling error and at O(N log N) instead of O(keys × N). With
members ordered by ``a_j / b_j``, the max is ``a_j / a_i`` for the members at or above ``i``'s
ratio and ``b_j / b_i`` below it, so two running sums give every term.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from fractions import Fraction

from balancer.hashing.base import Member


def expected_moved_share(old: Iterable[Member], new: Iterable[Member]) -> float:
    """The share of keys whose owner differs between rendezvous rings of ``old`` and ``new``.

    Args:
        old, new: the member sets (weight 0 = drained: owns no key).

    Returns:
        A share in [0, 1]; 1 when exactly one side has no live member, 0 when neither has.
    """
    before = {m.name: m.weight for m in old if m.weight > 0}
    after = {m.name: m.weight for m in new if m.weight > 0}
    if not before or not after:
        return 0.0 if before == after else 1.0

    def ratio(name: str) -> Fraction | float:
        return Fraction(before.get(name, 0), after[name]) if name in after else math.inf

    total_before = sum(before.values())
    before_below = 0  # Σ a_j over the members whose ratio is below the current group's
    after_below = 0  # Σ b_j over the same members
    kept = 0.0
    for _, group in itertools.groupby(sorted(before.keys() | after.keys(), key=ratio), ratio):
        names = list(group)
        before_at_or_above = total_before - before_below
        for name in names:
            if name in before and name in after:
                kept += 1.0 / (before_at_or_above / before[name] + after_below / after[name])
        before_below += sum(before.get(n, 0) for n in names)
        after_below += sum(after.get(n, 0) for n in names)
    return min(1.0, max(0.0, 1.0 - kept))

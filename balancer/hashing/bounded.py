"""Consistent hashing with bounded loads: which of a key's candidates takes the next request.

Owns ``load_cap`` and ``choose_bounded`` (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing
with Bounded Loads", 2018; HAProxy's ``hash-balance-factor``, Envoy's ``hash_balance_factor``). With
a factor c >= 1, no member may hold more than ``ceil(c × (total + 1) / members)`` requests, the
+1 being the request placed now. A key goes to its owner while the owner is below that cap, else
to the first candidate after it, in the ring's preference order, that is below it. Because the
members' loads add up to at most the total, some member is always below the cap when c >= 1; a
caller that can offer only some candidates gets the least-loaded one when all of them are full.
Pure: loads and candidates come from the caller, nothing is kept between calls.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client, or modules outside
``balancer.hashing``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# The factor is applied in integer thousandths so that caps land exactly where the formula puts
# them: 1.1 × 50 / 1 is a cap of 55, where the float product (55.00000000000001) would round up
# to 56.
_SCALE = 1000


def load_cap(factor: float, total_load: int, members: int) -> int:
    """``ceil(factor × (total_load + 1) / members)``, at least 1.

    Args:
        factor: c >= 1, used to 1/1000.
        total_load: requests in flight over all members, not counting the one being placed.
        members: members that can take keys (at least 1 is assumed).
    """
    den = _SCALE * (members or 1)
    return (round(factor * _SCALE) * (total_load + 1) + den - 1) // den or 1


def choose_bounded(
    owner: str,
    load: Callable[[str], int],
    total_load: int,
    members: int,
    factor: float,
    candidates: Callable[[int], Sequence[str]],
) -> str:
    """The member that takes a request whose key ``owner`` owns.

    Args:
        owner: the key's owner (what the ring's ``lookup`` returned).
        load: a member's requests in flight.
        total_load: requests in flight over all members (see ``load_cap``).
        members: how many members can take keys.
        factor: the balance factor c >= 1.
        candidates: ``count`` → the key's first ``count`` candidates, owner first, each call's
            answer a prefix of the next (the ring's ``candidates``). Called only when the owner
            is at the cap, asking for 2, 4, 8, … members until one is below the cap.

    Returns:
        The owner if it is below the cap, else the first candidate below it, else (every
        candidate offered is at the cap) the least-loaded candidate, the earliest on a tie.
    """
    cap = load_cap(factor, total_load, members)
    best_load = load(owner)
    if best_load < cap:
        return owner
    best = owner
    seen = {owner}
    want = 2
    while True:
        offered = candidates(min(want, members))
        for name in offered:
            if name in seen:
                continue
            seen.add(name)
            current = load(name)
            if current < cap:
                return name
            if current < best_load:
                best, best_load = name, current
        if want >= members or len(offered) < want:
            return best
        want *= 2

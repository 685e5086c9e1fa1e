"""The JSON forms of the shared state: the membership document and the routing settings.

Owns ``membership_json`` / ``membership_from_json`` (the form a store keeps and the primary
process relays to its workers) and ``settings_from_json`` (routing settings from a client or a
stored document, each field checked).
Must not import: redis, aiohttp, docker.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from balancer.hashing import ALGORITHMS, HASH_NAMES, PROBINGS, RingSettings
from balancer.hashing.hashes import SEED_BITS
from balancer.runtimes.base import legacy_locator
from balancer.state.store import Membership, Replica


def membership_json(membership: Membership) -> dict[str, Any]:
    """The stored (and relayed to worker processes) form of a membership document."""
    settings = membership.settings
    return {
        "epoch": membership.epoch,
        "target": membership.target,
        "settings": None if settings is None else dataclasses.asdict(settings),
        "ring_state": membership.ring_state,
        "replicas": [
            {
                "name": r.name,
                "index": r.index,
                "address": r.address,
                "weight": r.weight,
                "locator": r.locator,
            }
            for r in membership.replicas
        ],
    }


def membership_from_json(data: dict[str, Any]) -> Membership:
    replicas = tuple(
        Replica(
            r["name"],
            int(r["index"]),
            r["address"],
            int(r["weight"]),
            _locator(r),
        )
        for r in data["replicas"]
    )
    target = data.get("target")
    settings = data.get("settings")
    return Membership(
        int(data["epoch"]),
        replicas,
        None if target is None else int(target),
        None if settings is None else settings_from_json(settings, RingSettings()),
        str(data.get("ring_state", "")),
    )


def _locator(replica: dict[str, Any]) -> str:
    """A member's runtime locator; the previous version wrote ``pid`` and ``ident`` instead."""
    if "locator" in replica:
        return str(replica["locator"])
    return legacy_locator(replica.get("pid"), replica.get("ident"))


_INT_LIMITS = {"points_per_weight": (1, 10_000), "slots": (1, 1 << 20), "vnodes": (1, 1 << 20)}
_CHOICES: dict[str, tuple[str, ...]] = {
    "algorithm": ALGORITHMS,
    "hash_name": HASH_NAMES,
    "probing": PROBINGS,
}


def settings_from_json(data: object, base: RingSettings) -> RingSettings:
    """``base`` with the fields ``data`` (a JSON object) sets, each checked.

    Raises:
        ValueError: with a message fit for a client: not an object, an unknown field, or a
            value of the wrong type or out of range.
    """
    if not isinstance(data, dict):
        raise ValueError("settings must be a JSON object")
    known = {f.name for f in dataclasses.fields(RingSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    for name, choices in _CHOICES.items():
        if name in data and data[name] not in choices:
            raise ValueError(f"'{name}' must be one of: {', '.join(choices)}")
    for name, (low, high) in _INT_LIMITS.items():
        value = data.get(name, low)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"'{name}' must be an integer in {low}..{high}")
    merged = dataclasses.replace(base, **data)
    seed = merged.hash_seed
    bits = SEED_BITS[merged.hash_name]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**bits:
        raise ValueError(f"'hash_seed' must be an integer in [0, 2**{bits}) for {merged.hash_name}")
    factor = merged.balance_factor
    if (
        isinstance(factor, bool)
        or not isinstance(factor, int | float)
        or not math.isfinite(factor)
        or not (factor == 0 or 1 <= factor < 100)
    ):
        raise ValueError("'balance_factor' must be 0 (off) or a factor in [1, 100), e.g. 1.25")
    return dataclasses.replace(merged, balance_factor=float(factor))

"""The state seam: what balancer instances share, plus ``InMemoryStore`` for a single instance.

Owns ``Replica``, ``Membership``, the ``MembershipSource`` and ``Store`` protocols and
``InMemoryStore``. The shared state is:
  - membership, one versioned document: every committed change increments ``epoch``, and a
    commit names the epoch it was computed from, so a change based on stale state is refused
    instead of lost (``RedisStore`` does the same with a Lua compare-and-set);
  - replica liveness, a key with a TTL written by whoever probes a replica (never a wall-clock
    timestamp compared across hosts);
  - runtime records: how to reach each started replica's process or container, so a new leader
    can adopt the replicas its predecessor started;
  - the instance registry: each balancer instance's status, refreshed with a TTL.
Every method may raise ``StoreUnavailable`` when the store cannot be reached.
Must not import: redis, aiohttp, docker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from balancer.hashing import ALGORITHMS, HASH_NAMES, PROBINGS, Member, RingSettings
from balancer.hashing.hashes import SEED_BITS
from balancer.runtimes.base import ReplicaHandle

Clock = Callable[[], float]


@dataclass(frozen=True)
class Replica:
    """A replica that is (or is about to be) a ring member."""

    name: str
    index: int
    address: str  # "host:port" the balancer forwards to
    weight: int = 1
    pid: int | None = None  # the runtime's record, kept here too so a restored document
    ident: str = ""  # (after the store lost its data) still lets a new leader adopt it

    def member(self) -> Member:
        return Member(self.name, self.index, self.weight)


@dataclass(frozen=True)
class Membership:
    """The replicas in join order, at one epoch, N (how many the leader keeps running) and how
    every instance routes.

    ``target`` is None until the first leader boots the initial replicas; ``/add`` and ``/rm``
    move it, a failure does not (the leader replaces the failed replica to get back to it).
    ``settings`` are the routing settings every instance uses (None until the first commit
    pins the leader's own); ``ring_state`` is the algorithm's state for exactly these replicas
    (``balancer.hashing.next_state``; empty for stateless algorithms).
    """

    epoch: int = 0
    replicas: tuple[Replica, ...] = ()
    target: int | None = None
    settings: RingSettings | None = None
    ring_state: str = dataclasses.field(default="", repr=False)

    def members(self) -> list[Member]:
        return [r.member() for r in self.replicas]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.replicas]

    def get(self, name: str) -> Replica | None:
        return next((r for r in self.replicas if r.name == name), None)

    def free_index(self) -> int:
        """The smallest positive index no member uses (the assignment scheme's ``i``)."""
        used = {r.index for r in self.replicas}
        return next(i for i in range(1, len(used) + 2) if i not in used)


class MembershipSource(Protocol):
    """Where a ring view reads membership from (a store, or a worker's primary process)."""

    async def membership(self) -> Membership:
        """The current membership document."""
        ...

    async def wait_for_change(self, epoch: int, timeout_s: float) -> None:
        """Return when the epoch differs from ``epoch``, or after ``timeout_s`` (a hint only)."""
        ...


class Store(MembershipSource, Protocol):
    """Shared state of every balancer instance (see the module docstring)."""

    async def commit(
        self,
        replicas: Sequence[Replica],
        *,
        expected_epoch: int,
        fence_token: int | None = None,
        target: int | None = None,
        settings: RingSettings | None = None,
        ring_state: str = "",
    ) -> Membership | None:
        """Replace the member list, target N, routing settings and ring state if the epoch is
        still ``expected_epoch``.

        Args:
            fence_token: the writing leader's fencing token; a store shared by several
                instances refuses a token older than the current leader's (the in-memory store
                has one writer and ignores it).

        Returns:
            The new membership (epoch + 1), or None when another change won the race.

        Raises:
            StaleLeaderError: the token is stale (shared stores only).
        """
        ...

    async def restore(self, membership: Membership, *, fence_token: int | None = None) -> bool:
        """Write ``membership`` back (epoch included) if the stored epoch is older: the store
        lost its data and this is the newest membership an instance still routes on.

        Returns:
            False when the stored epoch is not older (nothing written).

        Raises:
            StaleLeaderError: the token is stale (shared stores only).
        """
        ...

    async def mark_alive(self, name: str, ttl_s: float) -> None:
        """Record a passed heartbeat; the replica counts as alive for ``ttl_s`` seconds."""
        ...

    async def mark_dead(self, name: str) -> None:
        """Drop a replica's liveness at once (its prober saw it fail)."""
        ...

    async def alive(self) -> frozenset[str]:
        """Names whose liveness has not expired."""
        ...

    async def record_handle(self, handle: ReplicaHandle) -> None:
        """Remember how to reach a started replica (before it joins the ring)."""
        ...

    async def drop_handle(self, name: str) -> None:
        """Forget a stopped replica's runtime record."""
        ...

    async def handles(self) -> list[ReplicaHandle]:
        """Every runtime record: replicas started by any leader and not known to be stopped."""
        ...

    async def announce(self, instance_id: str, info: dict[str, Any], ttl_s: float) -> None:
        """Publish this instance's status; it vanishes ``ttl_s`` after the last announcement."""
        ...

    async def withdraw(self, instance_id: str) -> None:
        """Remove this instance from the registry (on shutdown)."""
        ...

    async def instances(self) -> dict[str, dict[str, Any]]:
        """The status of every instance whose announcement has not expired."""
        ...

    async def record_event(self, event: dict[str, Any], keep: int) -> None:
        """Append a membership change event (JSON-able), keeping only the ``keep`` latest."""
        ...

    async def events(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` of the latest events, newest first."""
        ...


class InMemoryStore:
    """A ``Store`` for one process: tests and the single-instance embedded default."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._membership = Membership()
        self._alive_until: dict[str, float] = {}
        self._changed = asyncio.Condition()
        self._handles: dict[str, ReplicaHandle] = {}
        self._instances: dict[str, tuple[float, dict[str, Any]]] = {}
        self._events: list[dict[str, Any]] = []  # newest first

    async def membership(self) -> Membership:
        return self._membership

    async def commit(
        self,
        replicas: Sequence[Replica],
        *,
        expected_epoch: int,
        fence_token: int | None = None,
        target: int | None = None,
        settings: RingSettings | None = None,
        ring_state: str = "",
    ) -> Membership | None:
        if self._membership.epoch != expected_epoch:
            return None
        names = [r.name for r in replicas]
        if len(set(names)) != len(names):
            raise ValueError("duplicate replica names in a membership commit")
        self._membership = Membership(
            expected_epoch + 1, tuple(replicas), target, settings, ring_state
        )
        async with self._changed:
            self._changed.notify_all()
        return self._membership

    async def restore(self, membership: Membership, *, fence_token: int | None = None) -> bool:
        if self._membership.epoch >= membership.epoch:
            return False
        self._membership = membership
        async with self._changed:
            self._changed.notify_all()
        return True

    async def wait_for_change(self, epoch: int, timeout_s: float) -> None:
        async with self._changed:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._changed.wait_for(lambda: self._membership.epoch != epoch)
            except TimeoutError:
                return

    async def mark_alive(self, name: str, ttl_s: float) -> None:
        self._alive_until[name] = self._clock() + ttl_s

    async def mark_dead(self, name: str) -> None:
        self._alive_until.pop(name, None)

    async def alive(self) -> frozenset[str]:
        now = self._clock()
        return frozenset(n for n, until in self._alive_until.items() if until > now)

    async def record_handle(self, handle: ReplicaHandle) -> None:
        self._handles[handle.name] = handle

    async def drop_handle(self, name: str) -> None:
        self._handles.pop(name, None)

    async def handles(self) -> list[ReplicaHandle]:
        return list(self._handles.values())

    async def announce(self, instance_id: str, info: dict[str, Any], ttl_s: float) -> None:
        self._instances[instance_id] = (self._clock() + ttl_s, dict(info))

    async def withdraw(self, instance_id: str) -> None:
        self._instances.pop(instance_id, None)

    async def instances(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        return {i: info for i, (until, info) in self._instances.items() if until > now}

    async def record_event(self, event: dict[str, Any], keep: int) -> None:
        self._events = [dict(event), *self._events][:keep]

    async def events(self, limit: int) -> list[dict[str, Any]]:
        return [dict(e) for e in self._events[:limit]]


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
                "pid": r.pid,
                "ident": r.ident,
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
            None if r.get("pid") is None else int(r["pid"]),
            str(r.get("ident", "")),
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

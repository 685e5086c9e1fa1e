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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from balancer.hashing import Member
from balancer.runtime import ReplicaHandle

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
    """The replicas in join order, at one epoch, and N: how many the leader keeps running.

    ``target`` is None until the first leader boots the initial replicas; ``/add`` and ``/rm``
    move it, a failure does not (the leader replaces the failed replica to get back to it).
    """

    epoch: int = 0
    replicas: tuple[Replica, ...] = ()
    target: int | None = None

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
    ) -> Membership | None:
        """Replace the member list and target N if the epoch is still ``expected_epoch``.

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


class InMemoryStore:
    """A ``Store`` for one process: tests and the single-instance embedded default."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._membership = Membership()
        self._alive_until: dict[str, float] = {}
        self._changed = asyncio.Condition()
        self._handles: dict[str, ReplicaHandle] = {}
        self._instances: dict[str, tuple[float, dict[str, Any]]] = {}

    async def membership(self) -> Membership:
        return self._membership

    async def commit(
        self,
        replicas: Sequence[Replica],
        *,
        expected_epoch: int,
        fence_token: int | None = None,
        target: int | None = None,
    ) -> Membership | None:
        if self._membership.epoch != expected_epoch:
            return None
        names = [r.name for r in replicas]
        if len(set(names)) != len(names):
            raise ValueError("duplicate replica names in a membership commit")
        self._membership = Membership(expected_epoch + 1, tuple(replicas), target)
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


def membership_json(membership: Membership) -> dict[str, Any]:
    return {
        "epoch": membership.epoch,
        "target": membership.target,
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
    return Membership(int(data["epoch"]), replicas, None if target is None else int(target))

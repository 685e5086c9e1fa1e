"""The state seam: what balancer instances share, in small pieces by concern.

Owns the models (``Replica``, ``Membership``) and one Protocol per piece of shared state:
  - ``MembershipStore``: membership, one versioned document. Every committed change increments
    ``epoch``, and a commit names the epoch it was computed from, so a change based on stale
    state is refused instead of lost (Redis does the same with a Lua compare-and-set); a shared
    store also refuses a stale leader's fencing token. ``MembershipSource`` is its read side
    (what a ring view needs: the document and a wake-up when it changes);
  - ``LivenessStore``: replica liveness, a key with a TTL written by whoever probes a replica
    (never a wall-clock timestamp compared across hosts);
  - ``RecordStore``: runtime records, how to reach each started replica's process or
    container, so a new leader can adopt the replicas its predecessor started;
  - ``InstanceRegistry``: each balancer instance's status, refreshed with a TTL;
  - ``EventLog``: the latest membership change events.
``Store`` combines them for the few consumers that need several. The backends are
``balancer.state.memory`` (one process) and ``balancer.state.redis_store`` (shared); the
factories that return a backend's coordinated set (store, leadership, relay) are
``balancer.state.backends`` and ``balancer.state.redis_backend``.
Every method may raise ``StoreUnavailable`` when the store cannot be reached.
Must not import: redis, aiohttp, docker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from balancer.hashing import Member, RingSettings
from balancer.runtimes.base import ReplicaHandle

Clock = Callable[[], float]


@dataclass(frozen=True)
class Replica:
    """A replica that is (or is about to be) a ring member."""

    name: str
    index: int
    address: str  # "host:port" the balancer forwards to
    weight: int = 1
    locator: str = ""  # the runtime's (opaque), kept here too so a restored document (after
    # the store lost its data) still lets a new leader adopt the replica

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


class MembershipStore(MembershipSource, Protocol):
    """The versioned membership document: read, watch, compare-and-set, restore."""

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
            ValueError: two replicas share a name.
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


class LivenessStore(Protocol):
    """Which replicas passed a health check recently: a TTL per replica."""

    async def mark_alive(self, name: str, ttl_s: float) -> None:
        """Record a passed heartbeat; the replica counts as alive for ``ttl_s`` seconds."""
        ...

    async def mark_dead(self, name: str) -> None:
        """Drop a replica's liveness at once (its prober saw it fail)."""
        ...

    async def alive(self) -> frozenset[str]:
        """Names whose liveness has not expired."""
        ...


class RecordStore(Protocol):
    """Runtime records: how to reach every replica any leader started."""

    async def record_handle(self, handle: ReplicaHandle) -> None:
        """Remember how to reach a started replica (before it joins the ring)."""
        ...

    async def drop_handle(self, name: str) -> None:
        """Forget a stopped replica's runtime record."""
        ...

    async def handles(self) -> list[ReplicaHandle]:
        """Every runtime record: replicas started by any leader and not known to be stopped."""
        ...


class InstanceRegistry(Protocol):
    """Every balancer instance's status, each expiring unless announced again."""

    async def announce(self, instance_id: str, info: dict[str, Any], ttl_s: float) -> None:
        """Publish this instance's status; it vanishes ``ttl_s`` after the last announcement."""
        ...

    async def withdraw(self, instance_id: str) -> None:
        """Remove this instance from the registry (on shutdown)."""
        ...

    async def instances(self) -> dict[str, dict[str, Any]]:
        """The status of every instance whose announcement has not expired."""
        ...


class EventLog(Protocol):
    """The latest membership change events, newest first."""

    async def record_event(self, event: dict[str, Any], keep: int) -> None:
        """Append a membership change event (JSON-able), keeping only the ``keep`` latest."""
        ...

    async def events(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` of the latest events, newest first."""
        ...


class Store(MembershipStore, LivenessStore, RecordStore, InstanceRegistry, EventLog, Protocol):
    """Every piece at once, for the consumers that need several (see the module docstring)."""

"""The state seam: replica membership (versioned) and replica liveness (TTL), plus InMemoryStore.

Owns ``Replica``, ``Membership``, the ``Store`` protocol and ``InMemoryStore``. Membership is one
versioned document: every committed change increments ``epoch``, and a commit names the epoch it
was computed from, so a change based on stale state is refused instead of lost (the Redis store
of a later issue does the same with a Lua compare-and-set). Liveness is a key with a TTL written by
whoever probes a replica; it is never a wall-clock timestamp compared across hosts.
Must not import: redis, aiohttp, docker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from balancer.hashing import Member

Clock = Callable[[], float]


@dataclass(frozen=True)
class Replica:
    """A replica that is (or is about to be) a ring member."""

    name: str
    index: int
    address: str  # "host:port" the balancer forwards to
    weight: int = 1

    def member(self) -> Member:
        return Member(self.name, self.index, self.weight)


@dataclass(frozen=True)
class Membership:
    """The replicas in join order, at one epoch."""

    epoch: int = 0
    replicas: tuple[Replica, ...] = ()

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.replicas]

    def get(self, name: str) -> Replica | None:
        return next((r for r in self.replicas if r.name == name), None)

    def free_index(self) -> int:
        """The smallest positive index no member uses (the assignment scheme's ``i``)."""
        used = {r.index for r in self.replicas}
        return next(i for i in range(1, len(used) + 2) if i not in used)


class Store(Protocol):
    """Shared state of every balancer instance."""

    async def membership(self) -> Membership:
        """The current membership document."""
        ...

    async def commit(
        self,
        replicas: Sequence[Replica],
        *,
        expected_epoch: int,
        fence_token: int | None = None,
    ) -> Membership | None:
        """Replace the member list if the epoch is still ``expected_epoch``.

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

    async def wait_for_change(self, epoch: int, timeout_s: float) -> None:
        """Return when the epoch differs from ``epoch``, or after ``timeout_s`` (a hint only)."""
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


class InMemoryStore:
    """A ``Store`` for one process: tests and the single-instance embedded default."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._membership = Membership()
        self._alive_until: dict[str, float] = {}
        self._changed = asyncio.Condition()

    async def membership(self) -> Membership:
        return self._membership

    async def commit(
        self,
        replicas: Sequence[Replica],
        *,
        expected_epoch: int,
        fence_token: int | None = None,
    ) -> Membership | None:
        if self._membership.epoch != expected_epoch:
            return None
        names = [r.name for r in replicas]
        if len(set(names)) != len(names):
            raise ValueError("duplicate replica names in a membership commit")
        self._membership = Membership(expected_epoch + 1, tuple(replicas))
        async with self._changed:
            self._changed.notify_all()
        return self._membership

    async def wait_for_change(self, epoch: int, timeout_s: float) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._membership.epoch != epoch), timeout_s
                )
            except TimeoutError:
                return

    async def mark_alive(self, name: str, ttl_s: float) -> None:
        self._alive_until[name] = self._clock() + ttl_s

    async def mark_dead(self, name: str) -> None:
        self._alive_until.pop(name, None)

    async def alive(self) -> frozenset[str]:
        now = self._clock()
        return frozenset(n for n, until in self._alive_until.items() if until > now)


def membership_json(membership: Membership) -> dict[str, Any]:
    return {
        "epoch": membership.epoch,
        "replicas": [
            {"name": r.name, "index": r.index, "address": r.address, "weight": r.weight}
            for r in membership.replicas
        ],
    }


def membership_from_json(data: dict[str, Any]) -> Membership:
    replicas = tuple(
        Replica(r["name"], int(r["index"]), r["address"], int(r["weight"]))
        for r in data["replicas"]
    )
    return Membership(int(data["epoch"]), replicas)

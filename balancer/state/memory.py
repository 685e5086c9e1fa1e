"""The in-memory state backend: every piece of the state seam for one process.

Owns ``InMemoryStore`` (tests and the single-instance embedded default). One writer, so a
commit's fencing token is ignored; liveness and the instance registry expire on the injected
clock.
Must not import: redis, aiohttp, docker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from balancer.hashing import RingSettings
from balancer.runtimes.base import ReplicaHandle
from balancer.state.store import Clock, Membership, Replica


class InMemoryStore:
    """A ``Store`` for one process (see the module docstring)."""

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

"""Replicas that already run somewhere: a fixed pool of ``host:port`` backends.

Owns ``StaticRuntime``. "Spawning" hands out a pooled address no current replica uses; stopping
returns it to the pool. So a backend that fails its heartbeats leaves the ring, and rejoins
(under a new name) once it answers again and the supervisor's retry picks it.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

from collections.abc import Sequence

from balancer.errors import RuntimeFailure
from balancer.runtimes.base import ReplicaHandle


class StaticRuntime:
    def __init__(self, addresses: Sequence[str]) -> None:
        self._free = list(addresses)
        self._used: dict[str, ReplicaHandle] = {}

    async def spawn(self, name: str, server_id: str) -> ReplicaHandle:
        if not self._free:
            raise RuntimeFailure("every static backend is already in use")
        handle = ReplicaHandle(name, server_id, self._free.pop(0))
        self._used[name] = handle
        return handle

    async def stop(self, name: str, *, force: bool = False) -> None:
        handle = self._used.pop(name, None)
        if handle is not None:
            self._free.append(handle.address)

    async def adopt(self, handle: ReplicaHandle) -> bool:
        if handle.name in self._used:
            return True
        if handle.address not in self._free:
            return False  # not one of our backends, or already handed to another replica
        self._free.remove(handle.address)
        self._used[handle.name] = handle
        return True

    async def list(self) -> list[ReplicaHandle]:
        return list(self._used.values())

    async def release(self) -> None:
        for name in list(self._used):
            await self.stop(name)

    async def close(self) -> None:
        for name in list(self._used):
            await self.stop(name)

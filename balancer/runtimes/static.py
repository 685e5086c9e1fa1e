"""Replicas that already run somewhere: a fixed pool of ``host:port`` backends.

Owns ``StaticRuntime``. "Spawning" hands out a pooled address no current replica uses; stopping
returns it to the pool. So a backend that fails its heartbeats leaves the ring, and rejoins
(under a new name) once it answers again and the leader's next replacement picks it.

Where it departs from the runtime contract (``tests/runtimes``), because it does not own the
backends' processes: ``stop``, ``release`` and ``close`` stop routing to a backend (return its
address to the pool), never the backend itself; ``list`` is the backends handed out, whether
they answer or not (a backend that dies stays listed until the health checks evict it); and
``adopt`` takes an address of the pool no replica holds, without asking the backend. A handle's
``locator`` is the backend's address; ``describe`` shows nothing more.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from balancer.errors import ConfigError, RuntimeFailure
from balancer.runtimes.base import Description, ReplicaHandle
from balancer.setting import derived, setting


class StaticRuntime:
    def __init__(self, addresses: Sequence[str]) -> None:
        self._free = list(addresses)
        self._used: dict[str, ReplicaHandle] = {}

    async def spawn(self, name: str, server_id: str) -> ReplicaHandle:
        if name in self._used:  # a second address under one name would never return to the pool
            raise RuntimeFailure(f"replica {name!r} is already running")
        if not self._free:
            raise RuntimeFailure("every static backend is already in use")
        address = self._free.pop(0)
        handle = ReplicaHandle(name, server_id, address, address)
        self._used[name] = handle
        return handle

    async def stop(self, name: str, *, force: bool = False) -> None:
        handle = self._used.pop(name, None)
        if handle is not None:
            self._free.append(handle.address)

    async def adopt(self, handle: ReplicaHandle) -> bool:
        if handle.name in self._used:
            return True
        address = handle.locator or handle.address  # the previous version recorded no locator
        if address not in self._free:
            return False  # not one of our backends, or already handed to another replica
        self._free.remove(address)
        self._used[handle.name] = ReplicaHandle(handle.name, handle.server_id, address, address)
        return True

    async def list(self) -> list[ReplicaHandle]:
        return list(self._used.values())

    def describe(self, handle: ReplicaHandle) -> Description:
        return {}

    async def release(self) -> None:
        for name in list(self._used):
            await self.stop(name)

    async def close(self) -> None:
        for name in list(self._used):
            await self.stop(name)


# -- configuration: the section and factory balancer.runtimes.registry names ------------------


@dataclass(frozen=True)
class StaticSettings:
    """Replicas that already run: a fixed list of backends. A non-empty list picks this runtime
    whatever --runtime says."""

    backends: str = setting(
        "",
        "backends",
        "comma list of host:port backends that already run; replaces the runtime (replicas "
        "defaults to their number)",
    )
    backend_list: tuple[str, ...] = derived()

    def __post_init__(self) -> None:
        backends = tuple(b.strip() for b in self.backends.split(",") if b.strip())
        for backend in backends:
            host, _, port = backend.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"backend {backend!r} is not host:port")
        object.__setattr__(self, "backend_list", backends)

    @property
    def implied(self) -> bool:
        """A list of backends selects this runtime (``Settings.runtime``)."""
        return bool(self.backend_list)


def static_runtime(settings: StaticSettings) -> StaticRuntime:
    """The registry's factory: the pool of ``settings.backend_list``."""
    return StaticRuntime(settings.backend_list)

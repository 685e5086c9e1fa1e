"""The replica runtime seam: how replicas are started, stopped and listed.

Owns ``ReplicaHandle`` and the ``ReplicaRuntime`` protocol. Implementations: ``ProcessRuntime``
(local ``lb-server`` processes on loopback ports, the embedded default) and, in tests,
``InProcessRuntime`` (replica apps served from the test's own event loop). A Docker runtime
comes later; nothing outside the implementations knows which one runs.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ReplicaHandle:
    """A started replica."""

    name: str
    server_id: str
    address: str  # "host:port"
    pid: int | None = None


class ReplicaRuntime(Protocol):
    """Starts and stops replicas. Every method is safe to call from the event loop."""

    async def spawn(self, name: str, server_id: str) -> ReplicaHandle:
        """Start a replica that answers ``GET /home`` as ``server_id``; do not wait for it.

        Raises:
            RuntimeFailure: when it cannot be started.
        """
        ...

    async def stop(self, name: str, *, force: bool = False) -> None:
        """Stop a replica; unknown names are ignored.

        Args:
            force: kill at once (the replica failed) instead of a graceful stop with a deadline.
        """
        ...

    async def list(self) -> list[ReplicaHandle]:
        """The replicas this runtime started that are still running."""
        ...

    async def close(self) -> None:
        """Stop every replica this runtime started."""
        ...

"""The replica runtime seam: how replicas are started, stopped and listed.

Owns ``ReplicaHandle`` and the ``ReplicaRuntime`` protocol. Implementations: ``ProcessRuntime``
(local ``lb-server`` processes on loopback ports, the embedded default) and, in tests,
``InProcessRuntime`` (replica apps served from the test's own event loop). A Docker runtime comes
later; nothing outside the implementations knows which one runs. A handle serialises to JSON so
the store can keep it for the next leader to ``adopt``.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ReplicaHandle:
    """A started replica."""

    name: str
    server_id: str
    address: str  # "host:port"
    pid: int | None = None
    ident: str = ""  # runtime-specific identity that survives restarts (process start time, …)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplicaHandle:
        pid = data.get("pid")
        return cls(
            str(data["name"]),
            str(data["server_id"]),
            str(data["address"]),
            None if pid is None else int(pid),
            str(data.get("ident", "")),
        )


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

    async def adopt(self, handle: ReplicaHandle) -> bool:
        """Take charge of a replica another instance started, from its runtime record.

        Returns:
            True when the replica still runs (``stop`` and ``list`` now cover it); False when
            it is gone. A name this runtime already tracks is True at once.
        """
        ...

    async def list(self) -> list[ReplicaHandle]:
        """The replicas this runtime started or adopted that are still running."""
        ...

    async def release(self) -> None:
        """Stop tracking every replica and leave them running (another instance takes over)."""
        ...

    async def close(self) -> None:
        """Stop every replica this runtime started or adopted."""
        ...

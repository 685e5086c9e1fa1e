"""The replica runtime seam: how replicas are started, stopped, listed and described.

Owns ``ReplicaHandle`` and the ``ReplicaRuntime`` protocol. Implementations:
``balancer.runtimes.process`` (local ``lb-server`` processes on loopback ports, the embedded
default), ``balancer.runtimes.docker`` (containers on one network) and
``balancer.runtimes.static`` (backends that already run: ``--backends``); in tests,
``InProcessRuntime`` (replica apps served from the test's own event loop). Nothing outside the
implementations knows which one runs: a handle's ``locator`` says where its runtime finds the
replica again, in a form only that runtime reads. A handle serialises to JSON so the store can
keep it for the next leader to ``adopt``. ``tests/runtimes`` is the contract every runtime
passes; each runtime's module docstring states its locator and where it departs from the
process runtime's semantics.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

Description = dict[str, str | int | None]


@dataclass(frozen=True)
class ReplicaHandle:
    """A started replica: its name, server id, the address the balancer forwards to, and the
    runtime's ``locator`` (opaque outside the runtime that made it; "" when it needs none)."""

    name: str
    server_id: str
    address: str  # "host:port"
    locator: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server_id": self.server_id,
            "address": self.address,
            "locator": self.locator,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplicaHandle:
        """The handle ``to_json`` wrote, or one the previous version wrote (``pid`` + ``ident``
        in place of ``locator``)."""
        if "locator" in data:
            locator = str(data["locator"])
        else:
            locator = legacy_locator(data.get("pid"), data.get("ident"))
        return cls(str(data["name"]), str(data["server_id"]), str(data["address"]), locator)


def legacy_locator(pid: object, ident: object) -> str:
    """The locator of a record the previous version wrote as ``pid`` and ``ident``.

    Only the process runtime recorded a pid (its ``ident`` was the process start time): that
    pair becomes the process runtime's locator. The Docker runtime recorded ``ident`` alone (the
    container id), which is its locator as it is; the static runtime recorded neither.
    """
    start = "" if ident is None else str(ident)
    if pid is None:
        return start
    from balancer.runtimes.process import process_locator  # the process runtime's own form

    return process_locator(int(str(pid)), start)


class ReplicaRuntime(Protocol):
    """Starts and stops replicas. Every method is safe to call from the event loop.

    ``list`` reports what the runtime tracks (what it started or adopted and did not stop or
    release) and still runs; a replica that dies on its own drops out of it. A runtime whose
    engine keeps its own record of the replicas (Docker's daemon) reports the engine's list, so
    ``release`` changes nothing there; a runtime that cannot watch what it routes to (static
    backends) keeps a backend listed until it is stopped, and the health checks evict it.
    """

    async def spawn(self, name: str, server_id: str) -> ReplicaHandle:
        """Start a replica that answers ``GET /home`` as ``server_id``; do not wait for it.

        Raises:
            RuntimeFailure: when it cannot be started.
        """
        ...

    async def stop(self, name: str, *, force: bool = False) -> None:
        """Stop a replica and stop tracking it; unknown names are ignored.

        Args:
            force: kill at once (the replica failed) instead of a graceful stop with a deadline.
        """
        ...

    async def adopt(self, handle: ReplicaHandle) -> bool:
        """Take charge of a replica another instance (or this one, before it restarted)
        started, from its runtime record.

        Returns:
            True when the replica still runs (``stop`` and ``list`` now cover it); False when
            it is gone. A name this runtime already tracks is True while it runs.
        """
        ...

    async def list(self) -> list[ReplicaHandle]:
        """The replicas this runtime started or adopted that are still running."""
        ...

    def describe(self, handle: ReplicaHandle) -> Description:
        """What an operator may see of ``handle``'s locator, for ``GET /lb/status``: ``pid``
        (the process runtime) or ``container`` (Docker's short id); {} when nothing. Computed
        from the handle alone, without I/O. The keys are the ones the ``Status`` schema of
        ``balancer.api.openapi`` declares."""
        ...

    async def release(self) -> None:
        """Stop tracking every replica and leave them running (another instance takes over)."""
        ...

    async def close(self) -> None:
        """Stop every replica this runtime started or adopted."""
        ...

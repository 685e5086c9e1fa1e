"""Runtimes whose replicas another system runs: what the control plane and the admin API ask.

Owns ``Discovered`` (the two members such a runtime adds to ``ReplicaRuntime``) and
``managed_by``. With such a runtime (``balancer.runtimes.dns``) the leader joins and evicts what
the runtime lists instead of starting replicas (``balancer.control.plan``, ``Policy.discovered``),
its reconciler runs ``watch`` for the term, and ``/add``/``/rm`` are refused with the name of the
system that manages the replicas.
Must not import: asyncio, aiohttp, redis, docker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Discovered(Protocol):
    """A runtime that finds replicas instead of starting them."""

    managed_by: str  # who runs the replicas, for messages: "DNS name tasks.web"

    async def watch(self, on_change: Callable[[], None]) -> None:
        """Follow the source until cancelled; ``on_change()`` whenever its list changes."""
        ...


def managed_by(runtime: object) -> str:
    """Who runs ``runtime``'s replicas ("" when the runtime starts them itself)."""
    return runtime.managed_by if isinstance(runtime, Discovered) else ""

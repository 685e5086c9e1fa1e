"""A DNS answer the test sets by hand, for ``DnsRuntime``'s injected lookup, and replica apps
served in the test's loop to put in it."""

from __future__ import annotations

import asyncio

from balancer.runtimes.dns import Answer, LookupFailed
from server.app import create_app as create_replica_app
from tests.support.runtime import ReplicaHost


class FakeDns:
    """``lookup`` answers ``addresses`` with ``ttl_s``; ``failing`` makes it fail (a timeout
    or SERVFAIL), ``hang`` makes it never answer."""

    def __init__(self, addresses: list[str] | None = None, ttl_s: float = 0.0) -> None:
        self.addresses = list(addresses or [])
        self.ttl_s = ttl_s
        self.failing = False
        self.hang = False
        self.lookups = 0

    async def lookup(self) -> Answer:
        self.lookups += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.failing:
            raise LookupFailed("SERVFAIL (injected)")
        return Answer(tuple(sorted(self.addresses)), self.ttl_s)


async def serve_replicas(host: ReplicaHost, *ids: str) -> dict[str, tuple[str, str]]:
    """Replica apps answering as ``ids``: server id → (``127.0.0.1:port``, the host's key)."""
    served = {}
    for replica_id in ids:
        key, _, port = await host.serve(create_replica_app(replica_id))
        served[replica_id] = (f"127.0.0.1:{port}", key)
    return served

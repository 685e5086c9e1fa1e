"""The DNS runtime's harness: replicas the test serves itself, listed by a DNS answer it sets.

``DnsRuntime`` cannot start replicas, so every contract body (each starts with
``harness.spawn``) is skipped for it with that reason, and ``test_dns_runtime.py`` runs the
subset of the contract it has: what it lists, what ``spawn``/``stop``/``adopt``/``release``/
``close``/``describe`` do, a handle's round trip through the stores. The lookup is
``FakeDns`` here; ``tests/integration/test_dns_discovery.py`` runs the real one against dnsmasq.
"""

from __future__ import annotations

import pytest

from balancer.runtimes.base import ReplicaHandle, ReplicaRuntime
from balancer.runtimes.dns import DnsRuntime, replica_name
from tests.runtimes.conftest import Harness
from tests.support.dns_fake import FakeDns, serve_replicas
from tests.support.runtime import ReplicaHost

CANNOT_SPAWN = (
    "the dns runtime cannot start replicas (another system runs them); its part of the "
    "contract is tests/runtimes/test_dns_runtime.py"
)


class DnsHarness(Harness):
    name = "dns"
    owns_replicas = False  # stop/close leave the replica and the answer alone
    watches_replicas = False  # a replica that dies stays listed while DNS lists it
    engine_keeps_record = True  # list is DNS's answer, whoever runs the replicas

    def __init__(self) -> None:
        super().__init__()
        self.host = ReplicaHost()
        self.dns = FakeDns()
        self.keys: dict[str, tuple[str, str]] = {}  # address → (server id, host key)

    async def publish(self, *ids: str) -> list[str]:
        """Serve replicas answering as ``ids`` and add them to the answer; their addresses."""
        served = await serve_replicas(self.host, *ids)
        for replica_id, (address, key) in served.items():
            self.keys[address] = (replica_id, key)
            self.dns.addresses.append(address)
        return [address for address, _ in served.values()]

    async def spawn(self, runtime: ReplicaRuntime, name: str, server_id: str) -> ReplicaHandle:
        pytest.skip(CANNOT_SPAWN)

    def _make(self) -> ReplicaRuntime:
        # interval 0.01 s: each list() asks the (fake) name again, as a due poll would
        return DnsRuntime("tasks.web", self.dns.lookup, interval_s=0.01, timeout_s=0.5)

    def home_id(self, handle: ReplicaHandle) -> str:
        return self.keys[handle.address][0]

    async def kill(self, handle: ReplicaHandle) -> None:
        await self.host.kill(self.keys[handle.address][1])

    async def runs(self, handle: ReplicaHandle) -> bool:
        return self.keys[handle.address][1] in self.host.runners

    def name_of(self, address: str) -> str:
        return replica_name(address)

    async def close(self) -> None:
        await super().close()
        await self.host.close()

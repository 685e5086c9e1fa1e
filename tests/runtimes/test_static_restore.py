"""A static backend's locator lets a new leader adopt it after the store lost its data.

The previous version recorded no pid and no ident for a static backend, so a member restored from
an instance's own view (the store had restarted empty and the records with it) carried nothing
to adopt it by: the new leader's runtime never took its address out of the pool, and the next
replica it started could be handed a backend that was already a member under another name.
"""

from __future__ import annotations

from balancer.backoff import Backoff
from balancer.control.manager import ReplicaManager
from balancer.control.plan import Policy
from balancer.control.reconciler import Reconciler
from balancer.runtimes.static import StaticRuntime
from balancer.state.memory import InMemoryStore
from balancer.state.store import Membership, Replica
from tests.support.manager_rig import FakeLeadership

BACKENDS = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]  # never connected to: no probes here


async def ready(address: str) -> None:
    return None


async def nothing() -> None:
    return None


async def test_a_new_leader_adopts_the_restored_static_members() -> None:
    previous = StaticRuntime(BACKENDS)  # the old leader's
    first = await previous.spawn("Server 1", "1")
    second = await previous.spawn("Server 2", "2")
    routed = Membership(
        4,
        tuple(
            Replica(h.name, i, h.address, locator=h.locator)
            for i, h in enumerate((first, second), 1)
        ),
        2,
    )
    store = InMemoryStore()  # restarted empty: no membership, no records
    runtime = StaticRuntime(BACKENDS)  # the new leader's
    manager = ReplicaManager(
        store, runtime, ready, nothing, max_replicas=5, alive_ttl_s=5.0, leadership=FakeLeadership()
    )
    reconciler = Reconciler(
        Policy(2),
        manager,
        store,
        runtime,
        known=lambda: routed,
        down=dict,
        backoff=Backoff(base_s=0.01, cap_s=0.05),
    )
    for _ in range(3):
        await reconciler.reconcile_once()
    assert (await store.membership()).names == ["Server 1", "Server 2"]
    assert await runtime.list() == [first, second]
    third = await runtime.spawn("Server 3", "3")
    assert third.address not in (first.address, second.address)

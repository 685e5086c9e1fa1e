"""``Reconciler`` over replicas another system runs (``--runtime dns``): join, evict, never start.

The runtime is the real ``DnsRuntime`` over a lookup the test answers by hand (``FakeDns``);
the replicas are real replica apps served from the test's loop, and the manager checks them with
the real first health check (``wait_ready`` over HTTP), so "health checks gate membership" is
what runs here. A dead address is a loopback port nothing listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

import aiohttp
import pytest

from balancer.backoff import Backoff
from balancer.control.health import wait_ready
from balancer.control.manager import ReplicaManager
from balancer.control.plan import Join, Policy
from balancer.control.reconciler import Reconciler
from balancer.runtimes.dns import DnsRuntime, replica_name
from tests.conftest import eventually
from tests.support.dns_fake import FakeDns, serve_replicas
from tests.support.manager_rig import FakeLeadership, RecordingStore
from tests.support.runtime import ReplicaHost


@dataclass
class DnsRig:
    dns: FakeDns
    runtime: DnsRuntime
    store: RecordingStore
    manager: ReplicaManager
    host: ReplicaHost
    served: dict[str, tuple[str, str]]  # server id → (address, host key)

    def address(self, replica_id: str) -> str:
        return self.served[replica_id][0]

    def name(self, replica_id: str) -> str:
        return replica_name(self.address(replica_id))

    def names(self, *ids: str) -> list[str]:
        return sorted(self.name(i) for i in ids)

    async def members(self) -> list[str]:
        return sorted((await self.store.membership()).names)

    def reconciler(
        self, *, down: dict[str, float] | None = None, resync_s: float = 0.05
    ) -> Reconciler:
        verdicts = down if down is not None else {}
        return Reconciler(
            Policy(3),  # the runtime makes it ``discovered``; N=3 must never be booted
            self.manager,
            self.store,
            self.runtime,
            known=lambda: self.store._membership,
            down=lambda: verdicts,
            backoff=Backoff(base_s=0.01, cap_s=0.05),
            resync_s=resync_s,
            join_wait_s=0.5,
        )


def dead_address() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
async def dns_rig() -> AsyncIterator[DnsRig]:
    host = ReplicaHost()
    session = aiohttp.ClientSession()
    served = await serve_replicas(host, "A", "B", "C", "D")
    dns = FakeDns()
    runtime = DnsRuntime("tasks.web", dns.lookup, interval_s=0.05, timeout_s=0.2)
    store = RecordingStore()

    async def nothing() -> None:
        return None

    manager = ReplicaManager(
        store,
        runtime,
        partial(wait_ready, session, timeout_s=5.0),
        nothing,
        max_replicas=20,
        alive_ttl_s=5.0,
        leadership=FakeLeadership(token=7),
    )
    yield DnsRig(dns, runtime, store, manager, host, served)
    await session.close()
    await host.close()


@contextlib.asynccontextmanager
async def running(r: Reconciler) -> AsyncIterator[None]:
    task = asyncio.create_task(r.run(), name="test reconciler")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def rounds(r: Reconciler, n: int = 4) -> None:
    for _ in range(n):
        await r.reconcile_once()
        await asyncio.sleep(0.06)  # the answer is due again (interval 0.05 s)


async def test_listed_replicas_that_answer_join_and_unlisted_members_leave(dns_rig: DnsRig) -> None:
    rig = dns_rig
    rig.dns.addresses = [rig.address("A"), rig.address("B"), dead_address()]
    r = rig.reconciler()
    await rounds(r)
    assert await rig.members() == rig.names("A", "B")  # the dead address never joined
    membership = await rig.store.membership()
    assert membership.target is None  # nothing booted, nothing owed
    assert {rep.address for rep in membership.replicas} == {rig.address("A"), rig.address("B")}
    rig.dns.addresses = [rig.address("A"), rig.address("C"), rig.address("D")]
    await rounds(r)
    assert await rig.members() == rig.names("A", "C", "D")
    rig.dns.addresses = [rig.address("D")]
    await rounds(r)
    assert await rig.members() == rig.names("D")


async def test_a_replica_keeps_its_name_and_index_while_its_address_stays(dns_rig: DnsRig) -> None:
    rig = dns_rig
    rig.dns.addresses = [rig.address("A"), rig.address("B"), rig.address("C")]
    r = rig.reconciler()
    await rounds(r)
    before = {rep.name: rep.index for rep in (await rig.store.membership()).replicas}
    rig.dns.addresses = [rig.address("A"), rig.address("C"), rig.address("D")]
    await rounds(r)
    after = {rep.name: rep.index for rep in (await rig.store.membership()).replicas}
    for stayed in ("A", "C"):
        assert after[rig.name(stayed)] == before[rig.name(stayed)]


async def test_an_empty_answer_empties_the_ring(dns_rig: DnsRig) -> None:
    rig = dns_rig
    rig.dns.addresses = [rig.address("A"), rig.address("B")]
    r = rig.reconciler()
    await rounds(r)
    rig.dns.addresses = []  # NXDOMAIN, or a name without records: a real answer
    await rounds(r)
    assert await rig.members() == []


@pytest.mark.parametrize("how", ["servfail", "timeout"])
async def test_a_failed_lookup_keeps_every_member(dns_rig: DnsRig, how: str) -> None:
    rig = dns_rig
    rig.dns.addresses = [rig.address("A"), rig.address("B")]
    r = rig.reconciler()
    await rounds(r)
    epoch = (await rig.store.membership()).epoch
    rig.dns.failing, rig.dns.hang = how == "servfail", how == "timeout"
    rig.dns.addresses = []  # what it would say if it answered: it does not
    before = rig.dns.lookups
    await rounds(r)
    assert rig.dns.lookups > before  # it did ask
    assert await rig.members() == rig.names("A", "B")
    assert (await rig.store.membership()).epoch == epoch


async def test_a_dns_change_wakes_the_loop(dns_rig: DnsRig) -> None:
    rig = dns_rig
    rig.dns.addresses = [rig.address("A")]
    r = rig.reconciler(resync_s=30.0)  # only the runtime's watch can make it act soon
    async with running(r):
        await eventually(lambda: _equal(rig.members(), rig.names("A")), timeout_s=3.0)
        await asyncio.sleep(0.2)  # the loop sleeps its 30 s now
        rig.dns.addresses = [rig.address("A"), rig.address("B")]
        took = await eventually(lambda: _equal(rig.members(), rig.names("A", "B")), 3.0)
    assert took < 1.0, took


async def test_dead_addresses_do_not_hold_every_round(dns_rig: DnsRig) -> None:
    rig = dns_rig
    dead = [dead_address() for _ in range(12)]  # within one round's batch
    rig.dns.addresses = [rig.address("A"), *dead]
    r = rig.reconciler()
    started = time.monotonic()
    _, first = await r.reconcile_once()
    took_first = time.monotonic() - started
    assert await rig.members() == rig.names("A")
    assert took_first < 2.0, took_first  # each check at most join_wait_s (0.5 s), in parallel
    await asyncio.sleep(0.06)
    started = time.monotonic()
    _, second = await r.reconcile_once()
    assert not [a for a in second if isinstance(a, Join)]  # they wait before the next check
    assert time.monotonic() - started < 0.3
    assert [a for a in first if isinstance(a, Join)]


async def test_a_member_that_fails_its_checks_is_evicted_and_rejoins_only_when_it_answers(
    dns_rig: DnsRig,
) -> None:
    rig = dns_rig
    rig.dns.addresses = [rig.address("A"), rig.address("B")]
    down: dict[str, float] = {}
    r = rig.reconciler(down=down)
    await rounds(r)
    await rig.host.kill(rig.served["B"][1])  # B dies; DNS still lists it (a stale answer)
    down[rig.name("B")] = time.monotonic()  # the health checks say so
    await rounds(r)
    assert await rig.members() == rig.names("A")
    del down[rig.name("B")]  # no longer a member: the monitor forgets it
    await rounds(r)  # still listed, still dead: its join check fails, it stays out
    assert await rig.members() == rig.names("A")


async def test_join_never_exceeds_max_replicas(dns_rig: DnsRig) -> None:
    rig = dns_rig
    manager = ReplicaManager(
        rig.store,
        rig.runtime,
        partial(_ready),
        _nothing,
        max_replicas=2,
        alive_ttl_s=5.0,
        leadership=FakeLeadership(token=7),
    )
    rig.dns.addresses = [rig.address(i) for i in "ABCD"]
    handles = await rig.runtime.list()
    joined = await manager.join(handles, timeout_s=1.0)
    assert len(joined) == 2 and len(await rig.members()) == 2
    assert await manager.join(handles, timeout_s=1.0) == []


async def _ready(address: str) -> None:
    return None


async def _nothing() -> None:
    return None


async def _equal(got: object, want: list[str]) -> bool:
    assert asyncio.iscoroutine(got)
    return bool(await got == want)

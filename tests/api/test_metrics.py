"""``GET /metrics`` and ``GET /lb/targets`` of a balancer over in-process replicas: the counters
equal the traffic sent, label sets follow the ring, and discovery lists exactly the ring.

Each ``BalancerService`` has its own ``CollectorRegistry``, so every test starts from zero.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import aiohttp
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from balancer.api.metrics import KeyspaceShares, Liveness, TrafficCollector
from balancer.app import BalancerService
from balancer.errors import StoreUnavailable
from balancer.hashing import Member, RingSettings, build_ring
from balancer.http.stats import TrafficStats
from balancer.state.coordination import SoloLeadership
from balancer.state.memory import InMemoryStore
from balancer.state.store import Replica
from balancer.state.view import RingView
from tests.conftest import Balancer, BalancerFactory, eventually
from tests.support.runtime import InProcessRuntime

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(lb: Balancer) -> Samples:
    async with lb.client.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return parse(await resp.text())


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(k)[label]: v for (n, k), v in samples.items() if n == name}


async def send_home(lb: Balancer, keys: list[str]) -> collections.Counter[str]:
    """GET /home for each key; the replicas that answered, as ring names."""
    served: collections.Counter[str] = collections.Counter()
    for key in keys:
        async with lb.client.get("/home", params={"id": key}) as resp:
            assert resp.status == 200
            served[f"Server {(await resp.json())['message'].split()[-1]}"] += 1
    return served


async def owner(lb: Balancer, key: str) -> str:
    async with lb.client.get("/lb/lookup", params={"key": key}) as resp:
        return str((await resp.json())["message"]["owner"])


async def malformed_request(lb: Balancer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.service.port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 400")
    writer.close()
    await writer.wait_closed()


async def test_counters_equal_the_traffic_sent(lb: Balancer) -> None:
    served = await send_home(lb, [f"k{i}" for i in range(90)])
    assert len(served) == 3  # every replica got some: the per-replica checks below mean something
    missing: collections.Counter[str] = collections.Counter()
    for i in range(7):  # a path no replica serves: the replica's 404, relayed as the 400
        key = f"m{i}"
        async with lb.client.get("/nope", params={"id": key}) as resp:
            assert resp.status == 400
        missing[await owner(lb, key)] += 1
    await malformed_request(lb)

    async def settled() -> bool:
        return all(
            v == 0 for v in by_label(await scrape(lb), "lb_upstream_in_flight", "replica").values()
        )

    await eventually(settled)
    samples = await scrape(lb)

    assert by_label(samples, "lb_upstream_in_flight", "replica") == dict.fromkeys(served, 0.0)
    for name in served:
        ok = value(samples, "lb_upstream_responses_total", replica=name, code="2xx")
        assert ok == served[name], name
        # 0 (not absent) for a class with no response yet
        four = value(samples, "lb_upstream_responses_total", replica=name, code="4xx")
        assert four == missing[name], name
        total = served[name] + missing[name]
        assert value(samples, "lb_upstream_latency_seconds_count", replica=name) == total
        assert (
            value(samples, "lb_upstream_latency_seconds_bucket", replica=name, le="+Inf") == total
        )
        assert value(samples, "lb_upstream_retries_total", replica=name) == 0
        for kind in ("connect", "timeout", "reset", "protocol"):
            assert value(samples, "lb_upstream_errors_total", replica=name, kind=kind) == 0
    codes = {dict(k)["code"] for (n, k) in samples if n == "lb_upstream_responses_total"}
    assert codes == {"1xx", "2xx", "3xx", "4xx", "5xx"}
    answered = by_label(samples, "lb_balancer_errors_total", "code")
    assert {code: n for code, n in answered.items() if n} == {"400": 1.0}
    # Peak-to-mean of the requests completed since the ring's epoch began: all of them here.
    completed = [served[n] + missing[n] for n in served]
    expected = max(completed) / (sum(completed) / len(completed))
    assert value(samples, "lb_load_peak_to_mean") == pytest.approx(expected)


async def test_ring_leader_and_liveness(lb: Balancer) -> None:
    async with lb.client.get("/lb/status") as resp:
        status = await resp.json()
    names = [r["name"] for r in status["replicas"]]

    async def all_up() -> bool:  # and probed by the leader (the first round after they joined)
        samples = await scrape(lb)
        probed = by_label(samples, "lb_replica_heartbeat_age_seconds", "replica")
        up = by_label(samples, "lb_replica_up", "replica")
        return up == dict.fromkeys(names, 1.0) and set(probed) == set(names)

    await eventually(all_up)
    samples = await scrape(lb)
    assert value(samples, "lb_leader") == 1
    assert value(samples, "lb_ring_epoch") == status["epoch"]
    assert value(samples, "lb_ring_members") == 3
    info = {k: v for (n, k), v in samples.items() if n == "lb_ring_info"}
    assert info == {
        frozenset({("algorithm", "slots"), ("fingerprint", status["fingerprint"])}): 1.0
    }
    assert by_label(samples, "lb_replica_weight", "replica") == dict.fromkeys(names, 1.0)
    # The leader probes every 0.1 s here (tests/conftest.py FAST): a passed probe is recent.
    ages = by_label(samples, "lb_replica_heartbeat_age_seconds", "replica")
    assert set(ages) == set(names)
    assert all(0 <= age < 2.0 for age in ages.values()), ages
    # No traffic yet: no peak-to-mean.
    assert value(samples, "lb_load_peak_to_mean") is None


async def shares_of(lb: Balancer) -> dict[str, float]:
    """The ring's key-space shares once computed (in a worker thread after each ring change)."""
    found: dict[str, float] = {}

    async def computed() -> bool:
        found.update(by_label(await scrape(lb), "lb_replica_keyspace_share", "replica"))
        return bool(found)

    await eventually(computed)
    return found


async def test_keyspace_shares_match_observed_ownership(lb: Balancer) -> None:
    shares = await shares_of(lb)
    assert set(shares) == set(await lb.names())
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)
    count = 1500
    owned: collections.Counter[str] = collections.Counter()
    for i in range(count):
        owned[await owner(lb, f"share-{i}")] += 1
    for name, share in shares.items():
        # 1500 keys: one standard deviation of a ~1/3 share is 0.012; allow 4.
        assert abs(owned[name] / count - share) < 0.05, (name, owned, shares)


async def test_weights_and_drained_share(lb: Balancer) -> None:
    async with lb.client.put("/lb/weight", json={"hostname": "Server 2", "weight": 0}) as resp:
        assert resp.status == 200

    async def drained() -> bool:
        weights = by_label(await scrape(lb), "lb_replica_weight", "replica")
        return weights.get("Server 2") == 0

    await eventually(drained)
    shares = await shares_of(lb)
    assert shares["Server 2"] == 0
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert by_label(await scrape(lb), "lb_replica_weight", "replica") == {
        "Server 1": 1.0,
        "Server 2": 0.0,
        "Server 3": 1.0,
    }


# Gauges of the ring itself; a departed replica's counters linger (test_metrics_lifecycle.py).
RING_GAUGES = (
    "lb_replica_up",
    "lb_replica_keyspace_share",
    "lb_replica_weight",
    "lb_replica_ejected",
)


async def test_removed_replica_leaves_the_ring_gauges(lb: Balancer) -> None:
    await send_home(lb, [f"k{i}" for i in range(60)])
    before = await scrape(lb)
    assert any(dict(k).get("replica") == "Server 2" for _, k in before)

    async with lb.client.delete("/rm", json={"n": 1, "hostnames": ["Server 2"]}) as resp:
        assert resp.status == 200

    def ring_gauges(samples: Samples) -> set[str]:
        return {dict(k)["replica"] for (n, k) in samples if n in RING_GAUGES}

    async def gone() -> bool:
        samples = await scrape(lb)
        return (
            value(samples, "lb_ring_members") == 2
            and "Server 2" not in ring_gauges(samples)
            and bool(by_label(samples, "lb_replica_keyspace_share", "replica"))
        )

    await eventually(gone)
    samples = await scrape(lb)
    per_replica = {n for (n, k) in samples if "replica" in dict(k)}
    assert {"lb_upstream_responses_total", *RING_GAUGES} <= per_replica
    assert ring_gauges(samples) == {"Server 1", "Server 3"}
    # A new epoch: its peak-to-mean counts only requests completed since it began.
    assert value(samples, "lb_load_peak_to_mean") is None
    served = await send_home(lb, [f"after-{i}" for i in range(40)])
    samples = await scrape(lb)
    counts = [served[n] for n in ("Server 1", "Server 3")]
    assert value(samples, "lb_load_peak_to_mean") == pytest.approx(max(counts) / (sum(counts) / 2))


async def test_metrics_live_on_each_service_registry(make_balancer: BalancerFactory) -> None:
    one = await make_balancer()
    two = await make_balancer()
    await send_home(one, ["a", "b", "c"])
    assert (
        sum(by_label(await scrape(one), "lb_upstream_latency_seconds_count", "replica").values())
        == 3
    )
    assert set(
        by_label(await scrape(two), "lb_upstream_latency_seconds_count", "replica").values()
    ) == {0.0}
    assert prometheus_client.REGISTRY.get_sample_value("lb_ring_epoch") is None


async def targets(lb: Balancer) -> Any:
    async with lb.client.get("/lb/targets") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        return await resp.json()


async def rep_and_addresses(lb: Balancer) -> dict[str, str]:
    async with lb.client.get("/rep") as resp:
        names = (await resp.json())["message"]["replicas"]
    async with lb.client.get("/lb/status") as resp:
        addresses = {r["name"]: r["address"] for r in (await resp.json())["replicas"]}
    assert set(addresses) == set(names)
    return {n: addresses[n] for n in names}


def check_targets(groups: Any, expected: dict[str, str]) -> None:
    assert isinstance(groups, list)
    found = {}
    for group in groups:
        assert set(group) == {"targets", "labels"}
        assert len(group["targets"]) == 1 and isinstance(group["targets"][0], str)
        labels = group["labels"]
        assert labels["job"] == "replicas"
        assert all(isinstance(v, str) for v in labels.values())  # the http_sd format demands it
        found[labels["replica"]] = group["targets"][0]
    assert found == expected
    assert len(groups) == len(expected)


async def test_targets_list_exactly_the_ring(lb: Balancer) -> None:
    expected = await rep_and_addresses(lb)
    assert len(expected) == 3
    check_targets(await targets(lb), expected)
    group = (await targets(lb))[0]
    assert group["labels"]["__meta_chlb_server_id"] == group["labels"]["replica"].split()[-1]

    async with lb.client.post("/add", json={"n": 1, "hostnames": ["S9"]}) as resp:
        assert resp.status == 200
    async with lb.client.delete("/rm", json={"n": 1, "hostnames": ["Server 1"]}) as resp:
        assert resp.status == 200
    expected = await rep_and_addresses(lb)
    assert set(expected) == {"Server 2", "Server 3", "S9"}

    async def followed() -> bool:
        groups = await targets(lb)
        return {g["labels"]["replica"] for g in groups} == set(expected)

    await eventually(followed)
    check_targets(await targets(lb), expected)


# The collector on its own: what an instance that does not lead knows.


class Follower(SoloLeadership):
    is_leader = False


async def ring_of(store: InMemoryStore, names: list[str]) -> RingView:
    replicas = [Replica(n, i, f"127.0.0.1:{9000 + i}") for i, n in enumerate(names, 1)]
    assert await store.commit(replicas, expected_epoch=0) is not None
    view = RingView(store, RingSettings())
    await view.refresh()
    return view


def collect(collector: TrafficCollector) -> Samples:
    registry = prometheus_client.CollectorRegistry()
    registry.register(collector)
    return parse(prometheus_client.generate_latest(registry).decode())


async def test_a_follower_reads_liveness_from_the_store() -> None:
    store = InMemoryStore()
    view = await ring_of(store, ["Server 1", "Server 2"])
    liveness = Liveness(view, Follower())
    collector = TrafficCollector(TrafficStats(), view, liveness)

    samples = collect(collector)
    assert value(samples, "lb_leader") == 0
    assert by_label(samples, "lb_replica_up", "replica") == {}  # not read yet: unknown
    await store.mark_alive("Server 1", 30.0)
    await liveness.refresh(store)
    samples = collect(collector)
    assert by_label(samples, "lb_replica_up", "replica") == {"Server 1": 1.0, "Server 2": 0.0}
    assert by_label(samples, "lb_replica_heartbeat_age_seconds", "replica") == {}  # not probing

    class Down(InMemoryStore):
        async def alive(self) -> frozenset[str]:
            raise StoreUnavailable("down")

    await liveness.refresh(Down())
    assert by_label(collect(collector), "lb_replica_up", "replica") == {}


async def test_a_collector_without_liveness_still_exports_the_ring() -> None:
    view = await ring_of(InMemoryStore(), ["a", "b", "c"])
    collector = TrafficCollector(TrafficStats(), view)
    samples = collect(collector)
    assert value(samples, "lb_leader") == 1  # alone: SoloLeadership
    assert value(samples, "lb_ring_members") == 3
    assert value(samples, "lb_replica_up", replica="a") is None  # knows nothing about liveness

    async def computed() -> bool:  # in a worker thread, started by the first scrape
        return bool(by_label(collect(collector), "lb_replica_keyspace_share", "replica"))

    await eventually(computed)
    shares = by_label(collect(collector), "lb_replica_keyspace_share", "replica")
    assert set(shares) == {"a", "b", "c"} and sum(shares.values()) == pytest.approx(1.0)


def test_keyspace_shares_without_a_running_loop_are_computed_at_once() -> None:
    ring = build_ring([Member("a", 1), Member("b", 2)], RingSettings(algorithm="rendezvous"))
    found = KeyspaceShares().get(ring)
    assert found is not None and set(found) == {"a", "b"}
    assert sum(found.values()) == pytest.approx(1.0)


# A leader and a follower sharing one store: what each knows, and both following a failover.


class NeverLeads(SoloLeadership):
    """A follower that never wins the election."""

    is_leader = False

    async def wait_elected(self) -> None:
        await asyncio.Event().wait()


async def test_a_follower_knows_liveness_from_the_store_through_a_failover(
    make_balancer: BalancerFactory,
) -> None:
    leader = await make_balancer()
    follower_service = BalancerService(
        leader.settings, store=leader.store, runtime=InProcessRuntime(), leadership=NeverLeads()
    )
    await follower_service.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{follower_service.port}") as client:
            follower = Balancer(
                client, follower_service, leader.store, leader.runtime, leader.settings
            )
            await check_follower(leader, follower)
    finally:
        await follower_service.stop()


async def check_follower(leader: Balancer, follower: Balancer) -> None:
    names = await leader.names()

    async def up_on_both() -> bool:
        ups = [by_label(await scrape(b), "lb_replica_up", "replica") for b in (leader, follower)]
        return ups == [dict.fromkeys(names, 1.0)] * 2

    await eventually(up_on_both)
    samples = await scrape(follower)
    assert value(samples, "lb_leader") == 0
    assert value(await scrape(leader), "lb_leader") == 1
    assert by_label(samples, "lb_replica_heartbeat_age_seconds", "replica") == {}  # not probing
    check_targets(await targets(follower), await rep_and_addresses(leader))

    await leader.runtime.crash("Server 2")  # the leader replaces it under a new name

    async def replaced() -> bool:
        ring = await leader.names()
        if "Server 2" in ring or len(ring) != 3:
            return False
        ups = by_label(await scrape(follower), "lb_replica_up", "replica")
        listed = {g["labels"]["replica"] for g in await targets(follower)}
        return ups == dict.fromkeys(ring, 1.0) and listed == set(ring)

    await eventually(replaced, timeout_s=10.0)
    check_targets(await targets(follower), await rep_and_addresses(leader))

"""The life of ``/metrics`` label sets: a replica that leaves the ring (``/rm``, or killed and
removed) keeps its counters for a bounded linger, a bounded number of departed replicas at most,
and every label value of a counter is exported at 0 before its first increment.

The lingers use an injected clock: a second ``TrafficCollector`` (with a short linger) reads the
running service's stats and ring, so nothing sleeps through a linger.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from balancer.api.metrics import TrafficCollector
from balancer.api.replica_series import Departures
from balancer.http.stats import BALANCER_ERROR_CODES, ERROR_KINDS, TrafficStats, merged
from balancer.state.memory import InMemoryStore
from tests.api.test_metrics import (
    Samples,
    by_label,
    collect,
    malformed_request,
    owner,
    ring_of,
    scrape,
    send_home,
    value,
)
from tests.conftest import Balancer, BalancerFactory, eventually

CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Families a departed replica keeps (counters, the histogram, in-flight), and those it loses.
LINGERING = (
    "lb_upstream_responses_total",
    "lb_upstream_errors_total",
    "lb_upstream_retries_total",
    "lb_bounded_load_spills_total",
    "lb_outlier_ejections_total",
    "lb_upstream_latency_seconds_count",
    "lb_upstream_in_flight",
)
RING_ONLY = (
    "lb_replica_up",
    "lb_replica_heartbeat_age_seconds",
    "lb_replica_weight",
    "lb_replica_keyspace_share",
    "lb_replica_ejected",
)
SOURCE = Path(__file__).resolve().parents[2] / "balancer" / "http"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def of_replica(samples: Samples, name: str) -> Samples:
    return {k: v for k, v in samples.items() if dict(k[1]).get("replica") == name}


def families(samples: Samples) -> set[str]:
    return {n for (n, _) in samples}


def counters(samples: Samples) -> Samples:
    """The samples of the lingering counters and histogram (not the ring's gauges, nor the
    in-flight gauge)."""
    return {
        k: v
        for k, v in samples.items()
        if k[0] not in RING_ONLY and k[0] != "lb_upstream_in_flight"
    }


async def rm(lb: Balancer, name: str) -> None:
    async with lb.client.delete("/rm", json={"n": 1, "hostnames": [name]}) as resp:
        assert resp.status == 200

    async def left() -> bool:
        return name not in lb.service.view.current.addresses

    await eventually(left)


async def test_a_removed_replica_keeps_its_counters_until_its_linger_ends(lb: Balancer) -> None:
    clock = Clock()
    short = TrafficCollector(lb.service.stats, lb.service.view, linger_s=30.0, clock=clock)
    served = await send_home(lb, [f"k{i}" for i in range(60)])
    assert served["Server 2"] > 0
    before = of_replica(await scrape(lb), "Server 2")

    await rm(lb, "Server 2")
    kept = of_replica(await scrape(lb), "Server 2")
    ok = value(kept, "lb_upstream_responses_total", replica="Server 2", code="2xx")
    assert ok == served["Server 2"]
    assert counters(kept) == counters(before)  # every counter and bucket, as it was
    assert families(kept) >= set(LINGERING)
    assert not families(kept) & set(RING_ONLY)  # the ring's own gauges went with the ring
    assert value(kept, "lb_upstream_in_flight", replica="Server 2") == 0

    clock.now += 29.0
    assert of_replica(collect(short), "Server 2") == kept
    clock.now += 1.0  # its linger ended: every label set of it goes
    assert of_replica(collect(short), "Server 2") == {}
    assert value(collect(short), "lb_upstream_responses_total", replica="Server 1", code="2xx")
    # The service's own collector (the default linger, 300 s) still exports it.
    assert of_replica(await scrape(lb), "Server 2") == kept


async def test_a_killed_replicas_errors_and_retries_outlive_its_removal(
    make_balancer: BalancerFactory,
) -> None:
    # Heartbeats far apart: nothing detects the crash; the requests fail over by retries.
    lb = await make_balancer(heartbeat_interval_s=30.0, heartbeat_timeout_s=1.0)
    keys = [f"x{i}" for i in range(200)]
    victim_keys = [k for k in keys if await owner(lb, k) == "Server 2"]
    assert victim_keys
    await lb.runtime.crash("Server 2")
    # Each fails on Server 2 and is retried elsewhere, until outlier detection ejects it.
    await send_home(lb, victim_keys)
    dead = of_replica(await scrape(lb), "Server 2")
    retried = value(dead, "lb_upstream_retries_total", replica="Server 2")
    assert retried is not None and retried >= 1
    failed = by_label(dead, "lb_upstream_errors_total", "kind")
    assert set(failed) == set(ERROR_KINDS) and failed["connect"] >= 1

    await rm(lb, "Server 2")
    kept = of_replica(await scrape(lb), "Server 2")
    assert by_label(kept, "lb_upstream_errors_total", "kind") == failed
    assert value(kept, "lb_upstream_retries_total", replica="Server 2") == retried
    assert counters(kept) == counters(dead)


async def test_departed_replicas_are_capped_oldest_first(lb: Balancer) -> None:
    clock = Clock()
    capped = TrafficCollector(
        lb.service.stats, lb.service.view, linger_s=60.0, max_departed=2, clock=clock
    )
    async with lb.client.post("/add", json={"n": 3, "hostnames": ["A", "B", "C"]}) as resp:
        assert resp.status == 200
    await eventually(lambda: _has(lb, "C"))
    for name in ("A", "B", "C", "Server 1"):  # one at a time: four departures, in this order
        clock.now += 1.0
        await rm(lb, name)
    exported = {dict(k)["replica"] for (n, k) in collect(capped) if "replica" in dict(k)}
    assert exported == {"Server 2", "Server 3", "C", "Server 1"}  # A and B were dropped


async def _has(lb: Balancer, name: str) -> bool:
    return name in lb.service.view.current.addresses


def test_departures_linger_cap_and_rejoin() -> None:
    clock = Clock()
    gone = Departures(linger_s=10.0, max_departed=3, clock=clock)
    gone.swapped(["a", "b", "c", "d"], ["a", "b", "c"])  # d leaves at 1000
    clock.now += 5.0
    gone.swapped(["a", "b", "c"], ["a"])  # b, c leave at 1005
    assert gone.names() == ["d", "b", "c"]
    gone.swapped(["a"], ["a", "b"])  # b is back: a member again, not a departed one
    assert gone.names() == ["d", "c"]
    clock.now += 5.0  # d left 10 s ago
    assert gone.names() == ["c"]
    for i in range(5):  # churn: only the last 3 departures stay
        gone.swapped([f"n{i}"], [])
    assert gone.names() == ["n2", "n3", "n4"]
    clock.now += 10.0
    assert gone.names() == []


def test_stats_of_departed_replicas_are_pruned_after_the_linger_and_capped() -> None:
    clock = Clock()
    stats = TrafficStats(linger_s=10.0, max_departed=2, clock=clock)
    for name in ("a", "b", "c", "d"):
        stats.replica(name).record(200, 0.001)
    stats.retain({"a", "b", "c"})  # d leaves
    assert set(stats.replicas) == {"a", "b", "c", "d"}
    clock.now += 9.0
    assert set(merged(stats)["replicas"]) == {"a", "b", "c", "d"}
    stats.retain({"a", "b"})  # c leaves; d is 9 s into its linger
    clock.now += 1.0
    assert set(merged(stats)["replicas"]) == {"a", "b", "c"}  # a scrape prunes too
    stats.retain({"a"})  # b leaves
    assert stats.replicas["b"].requests == 1
    stats.retain({"b"})  # b is back, its counters kept; a leaves
    stats.replica("x").record(200, 0.001)
    stats.retain({"b"})  # x leaves: three departed (c, a, x), two kept, the oldest dropped
    assert set(stats.replicas) == {"a", "b", "x"} and stats.replicas["b"].requests == 1


async def test_a_collector_never_exports_longer_than_the_stats_keep() -> None:
    view = await ring_of(InMemoryStore(), ["a"])
    stats = TrafficStats(linger_s=10.0, max_departed=4)
    with pytest.raises(ValueError):
        TrafficCollector(stats, view, linger_s=11.0)
    with pytest.raises(ValueError):
        TrafficCollector(stats, view, max_departed=5)


# -- every label value at 0 from the start ------------------------------------------------------


async def test_a_fresh_member_exports_every_class_and_kind_at_zero() -> None:
    view = await ring_of(InMemoryStore(), ["a", "b"])
    samples = collect(TrafficCollector(TrafficStats(), view))
    for name in ("a", "b"):
        assert by_label(
            of_replica(samples, name), "lb_upstream_responses_total", "code"
        ) == dict.fromkeys(CLASSES, 0.0)
        assert by_label(
            of_replica(samples, name), "lb_upstream_errors_total", "kind"
        ) == dict.fromkeys(ERROR_KINDS, 0.0)
        for family in ("lb_upstream_retries_total", "lb_upstream_latency_seconds_count"):
            assert value(samples, family, replica=name) == 0


async def test_counters_of_a_serving_member_start_at_zero(lb: Balancer) -> None:
    served = await send_home(lb, [f"k{i}" for i in range(30)])
    samples = await scrape(lb)
    for name in ("Server 1", "Server 2", "Server 3"):
        codes = by_label(of_replica(samples, name), "lb_upstream_responses_total", "code")
        assert codes == {**dict.fromkeys(CLASSES, 0.0), "2xx": float(served[name])}


async def test_balancer_errors_export_every_code_from_the_start(lb: Balancer) -> None:
    assert by_label(await scrape(lb), "lb_balancer_errors_total", "code") == dict.fromkeys(
        BALANCER_ERROR_CODES, 0.0
    )
    await malformed_request(lb)
    codes = by_label(await scrape(lb), "lb_balancer_errors_total", "code")
    assert codes == {**dict.fromkeys(BALANCER_ERROR_CODES, 0.0), "400": 1.0}


def test_the_code_list_holds_every_status_the_balancer_answers() -> None:
    """A status the data path answers itself but ``BALANCER_ERROR_CODES`` lacks would appear only
    on its first occurrence (the source is read: the list must grow with it)."""
    source = "\n".join(p.read_text() for p in SOURCE.glob("*.py"))
    calls = re.findall(
        r"(?:respond_error|_fail|_protocol_error|client_error)\(\s*(\d{3})\b", source
    )
    mapped = re.findall(r"^\s+\w+: (\d{3}),$", (SOURCE / "request_head.py").read_text(), re.M)
    assert calls and mapped
    assert set(calls) | set(mapped) <= set(BALANCER_ERROR_CODES)

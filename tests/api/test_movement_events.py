"""Movement accounting: every change is logged with the share of keys it moved."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from balancer.control.movement_log import MovementLog
from balancer.hashing import RingSettings
from balancer.state.memory import InMemoryStore
from balancer.state.store import Membership, Replica
from tests.conftest import Balancer, BalancerFactory, eventually


async def events(lb: Balancer) -> list[dict[str, Any]]:
    async with lb.client.get("/lb/events", params={"limit": "20"}) as resp:
        assert resp.status == 200
        return (await resp.json())["message"]["events"]  # type: ignore[no-any-return]


async def test_each_change_is_logged_with_its_exact_movement(
    make_balancer: BalancerFactory,
) -> None:
    # Steady health checks: with the suite's 0.1 s probes, the event loop stalls of a loaded
    # machine (each change builds 65,536-slot tables) failed every probe twice in a row and
    # evicted the replicas right after the /rm (about 1 run in 8): the eviction became the last
    # event, and lb_ring_last_moved_share read its 1/3 instead of the removal's 0.
    lb = await make_balancer(heartbeat_interval_s=1.0, heartbeat_timeout_s=1.0)
    await eventually(lambda: _count_at_least(lb, 1))  # the boot: 3 replicas from nothing
    async with lb.client.post("/add", json={"n": 1, "hostnames": ["S4"]}) as resp:
        assert resp.status == 200
    async with lb.client.put("/lb/weight", json={"hostname": "S4", "weight": 0}) as resp:
        assert resp.status == 200
        drain_epoch = (await resp.json())["message"]["epoch"]
    async with lb.client.delete("/rm", json={"n": 1, "hostnames": ["S4"]}) as resp:
        assert resp.status == 200
    await eventually(lambda: _count_at_least(lb, 4))
    newest_first = await events(lb)
    epochs = [e["epoch"] for e in newest_first]
    assert epochs == sorted(epochs, reverse=True)  # the log keeps commit order
    logged = sorted(newest_first, key=lambda e: e["epoch"])
    # Picked by kind and epoch, not by position; the metrics below are those of exactly these
    # four changes, so nothing else may have been committed meanwhile.
    assert [(e["kind"], e["added"], e["removed"]) for e in logged] == [
        ("add", ["Server 1", "Server 2", "Server 3"], []),
        ("add", ["S4"], []),
        ("weight", [], []),
        ("remove", [], ["S4"]),
    ], logged
    boot, add, drain, rm = logged
    assert drain["epoch"] == drain_epoch and rm["epoch"] > drain_epoch
    assert (boot["kind"], boot["replicas_before"], boot["replicas_after"]) == ("add", 0, 3)
    assert add["kind"] == "add" and add["added"] == ["S4"]
    assert add["ideal_share"] == 0.25 and add["excess"] == 1.0  # slots: exactly the ideal
    assert drain["kind"] == "weight" and drain["replicas_after"] == 3
    assert drain["moved_share"] == pytest.approx(0.25, abs=1e-4)
    assert rm["kind"] == "remove" and rm["removed"] == ["S4"]
    assert rm["moved_share"] == 0.0  # S4 was drained: removing it moves nothing
    async with lb.client.get("/metrics") as resp:
        text = await resp.text()
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(samples['lb_scale_events_total{kind="add"}']) == 2  # the boot and S4
    assert float(samples['lb_scale_events_total{kind="weight"}']) == 1
    assert float(samples["lb_ring_last_moved_share"]) == 0.0  # removing the drained S4
    assert float(samples["lb_ring_moved_share_total"]) == pytest.approx(1 + 0.25 + 0.25, abs=1e-3)


async def _count_at_least(lb: Balancer, n: int) -> bool:
    return len(await events(lb)) >= n


async def test_events_refuse_a_bad_limit(lb: Balancer) -> None:
    for limit in ("0", "x", "201", "-1"):
        async with lb.client.get("/lb/events", params={"limit": limit}) as resp:
            assert resp.status == 400


def replicas(*names: str) -> tuple[Replica, ...]:
    return tuple(Replica(n, i, f"127.0.0.1:{9000 + i}") for i, n in enumerate(names, 1))


def test_a_settings_switch_moves_keys_with_no_ideal_share() -> None:
    log = MovementLog(InMemoryStore(), RingSettings(), wall_clock=lambda: 1.5)
    before = Membership(4, replicas("a", "b", "c"), 3, RingSettings())
    after = Membership(5, before.replicas, 3, RingSettings(algorithm="ring"))
    event = log.measure("settings", before, after)
    assert event["ideal_share"] == 0 and event["excess"] is None
    assert 0.4 < event["moved_share"] < 0.9  # two unrelated 3-member rings agree on ~1/3
    assert event["time"] == 1.5 and event["epoch"] == 5


async def test_the_log_keeps_only_the_latest_events_in_commit_order() -> None:
    store = InMemoryStore()
    log = MovementLog(store, RingSettings(algorithm="ring"), keep=3)
    task = asyncio.create_task(log.run())
    members: tuple[Replica, ...] = ()
    for i in range(5):
        after = members + replicas(*(f"s{j}" for j in range(i + 1)))[i:]
        log.committed("add", Membership(i, members), Membership(i + 1, after))
        members = after
    for _ in range(500):
        if sum(log.counts.values()) == 5:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert log.counts["add"] == 5
    kept = await store.events(10)
    assert [e["epoch"] for e in kept] == [5, 4, 3]
    assert [e["added"] for e in kept] == [["s4"], ["s3"], ["s2"]]
    assert log.last is not None and log.last["epoch"] == 5

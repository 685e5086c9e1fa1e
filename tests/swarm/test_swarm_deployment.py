"""``--runtime swarm`` end to end: two balancer services on an overlay network start, replace and
adopt replica services on a real swarm (``tests/swarm/deployment.py``).

  1. both balancers serve N=3, spread keys over the three, and ``/add`` / ``/rm`` (on the
     follower, relayed to the leader) create and remove one Swarm service per replica;
  2. a replica's service removed (``docker service rm``) or its task's container killed behind
     the balancers' back under steady load: a replacement under a new random name serves within
     10 s, and no GET fails (the balancers retry a refused connection on the next replica);
  3. the leader balancer's task killed under load: the other instance leads, adopts the running
     services and starts none twice; a replica killed afterwards is replaced by the new leader.

Needs a Docker daemon that is (or can become) a swarm manager and the images (skipped with the
reason otherwise). Each test prints what it measured (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from tests.swarm.deployment import SwarmDeployment
from tests.swarm.load import Load, call, leader_of, poll, rep, session

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPLACE_LIMIT_S = 10.0


async def test_balancers_serve_and_change_replicas_as_services(deployment: SwarmDeployment) -> None:
    dep = deployment
    ports = list(dep.ports.values())
    async with session() as s:
        reps = [await rep(s, p) for p in ports]
        assert reps[0] == reps[1] and reps[0]["N"] == 3, reps
        running = await asyncio.to_thread(dep.running_replicas)
        assert sorted(running.values()) == sorted(reps[0]["replicas"])
        _, status = await call(s, "GET", ports[0], "/lb/status")
        described = {r["name"]: r["service"] for r in status["replicas"]}
        assert {sid[:12]: name for sid, name in running.items()} == {
            short: name for name, short in described.items()
        }

        load = Load(ports, loops=4, max_s=6.0)
        await load.run(s)
        assert not load.failures, load.failures[:5]
        assert len(load.counts) == 3 and min(load.counts.values()) > load.ok // 10, load.counts
        print(f"\n[up] N=3 on both {dep.ready_s:.1f} s after up; {load.ok} GETs, 0 failed")

        leader = await leader_of(s, ports)
        follower = next(i for i in dep.ports if i != leader)
        code, added = await call(
            s, "POST", dep.ports[follower], "/add", {"n": 1, "hostnames": ["S9"]}
        )
        assert code == 200 and "S9" in added["message"]["replicas"], added
        services = {s_.name for s_ in await asyncio.to_thread(dep.replica_services)}
        assert f"{dep.deployment}-S9" in services
        code, removed = await call(
            s, "DELETE", dep.ports[follower], "/rm", {"n": 1, "hostnames": ["S9"]}
        )
        assert code == 200 and removed["message"]["N"] == 3, removed
        services = {s_.name for s_ in await asyncio.to_thread(dep.replica_services)}
        assert f"{dep.deployment}-S9" not in services


async def _remove_behind_the_back(dep: SwarmDeployment, how: str) -> tuple[str, str]:
    """Remove one replica's service, or kill its task's container; (service id, name)."""
    (service_id, name), *_ = sorted((await asyncio.to_thread(dep.running_replicas)).items())

    def act() -> None:
        service = dep.client.services.get(service_id)
        if how == "service-rm":
            service.remove()
            return
        (task,) = service.tasks(filters={"desired-state": "running"})
        dep.client.containers.get(task["Status"]["ContainerStatus"]["ContainerID"]).kill()

    await asyncio.to_thread(act)
    return service_id, name


async def _restored(s: Any, dep: SwarmDeployment, victim: str, before: set[str]) -> bool:
    """N=3 on every balancer without the victim, a new replica in, and its service running."""
    reps = [await rep(s, p) for p in dep.ports.values()]
    running = set((await asyncio.to_thread(dep.running_replicas)).values())
    names = set(reps[0]["replicas"])
    return (
        all(set(r["replicas"]) == names for r in reps)
        and len(names) == 3
        and victim not in names
        and bool(names - before)
        and names == running
    )


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "how", ["service-rm", "service-rm", "service-rm", "task-kill"], ids=lambda h: h
)
async def test_a_replica_removed_behind_the_back_is_replaced_under_load(
    deployment: SwarmDeployment, how: str
) -> None:
    dep = deployment
    ports = list(dep.ports.values())
    async with session() as s:
        before = set((await rep(s, ports[0]))["replicas"])
        load = Load(ports, loops=4, max_s=40.0)
        runner = asyncio.create_task(load.run(s))
        try:
            await asyncio.sleep(2.0)
            assert load.ok > 0 and not load.failures, load.failures[:5]
            removed_at = time.monotonic()
            _, victim = await _remove_behind_the_back(dep, how)
            took = await poll(lambda: _restored(s, dep, victim, before), REPLACE_LIMIT_S + 20.0)
            await asyncio.sleep(2.0)  # load on the restored ring too
        finally:
            load.stop.set()
            await asyncio.wait_for(runner, 30.0)
        after = set((await rep(s, ports[0]))["replicas"])
    new = sorted(after - before)
    fresh = all(re.fullmatch(r"Server [0-9a-f]{6}", n) for n in new)
    late = [f for f in load.failures if f[0] >= removed_at]
    print(
        f"\n[{how}] {victim} removed; replacement {new} serving on both balancers "
        f"{'never' if took is None else f'{took:.2f} s'} after; {load.total} GETs, "
        f"{len(load.failures)} failed ({len(late)} after the removal): {load.failures[:3]}"
    )
    assert took is not None and took <= REPLACE_LIMIT_S, dep.logs()
    assert fresh and len(new) == 1 and after == before - {victim} | set(new)
    assert not load.failures


@pytest.mark.timeout(180)
async def test_the_leaders_task_killed_another_leads_and_adopts(
    deployment: SwarmDeployment,
) -> None:
    dep = deployment
    async with session() as s:
        leader = await leader_of(s, list(dep.ports.values()))
        survivor = next(i for i in dep.ports if i != leader)
        before = await asyncio.to_thread(dep.running_replicas)
        assert len(before) == 3
        load = Load([dep.ports[survivor]], loops=4, max_s=40.0)
        runner = asyncio.create_task(load.run(s))
        try:
            await asyncio.sleep(2.0)
            container = await asyncio.to_thread(dep.balancer_container, leader)
            killed = time.monotonic()
            await asyncio.to_thread(container.kill)
            took = await poll(lambda: _leads(s, dep.ports[survivor], survivor), 30.0)
            # Watch a while: the new leader adopts the services it finds and starts none.
            seen = [await asyncio.to_thread(dep.running_replicas)]
            while time.monotonic() - killed < 10.0:
                await asyncio.sleep(0.5)
                seen.append(await asyncio.to_thread(dep.running_replicas))
        finally:
            load.stop.set()
            await asyncio.wait_for(runner, 30.0)
        services = {s_.id for s_ in await asyncio.to_thread(dep.replica_services)}
        print(
            f"\n[leader killed] {leader}'s task killed; {survivor} leads "
            f"{'never' if took is None else f'{took:.2f} s'} after; replica services before "
            f"{sorted(before.values())}, after {sorted(seen[-1].values())}; {load.total} GETs "
            f"through {survivor}, {len(load.failures)} failed: {load.failures[:3]}"
        )
        assert took is not None, dep.logs()
        assert all(snapshot == before for snapshot in seen), seen  # adopted, none started twice
        assert services == set(before)
        assert not load.failures

        # The new leader's runtime manages what it adopted: a replica killed now is replaced.
        ring = set((await rep(s, dep.ports[survivor]))["replicas"])
        _, victim = await _remove_behind_the_back(dep, "task-kill")
        replaced = await poll(lambda: _restored(s, dep, victim, ring), REPLACE_LIMIT_S + 20.0)
        print(f"[leader killed] then {victim} killed: replaced {replaced} s after")
        assert replaced is not None and replaced <= REPLACE_LIMIT_S, dep.logs()


async def _leads(s: Any, port: int, instance: str) -> bool:
    _, doc = await call(s, "GET", port, "/lb/status")
    return [i["id"] for i in doc["instances"] if i["leader"]] == [instance]

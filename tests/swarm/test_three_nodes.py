"""Several Swarm nodes on one machine (``tests/swarm/nodes.py``): a manager running Redis and
the two balancers, two workers running the replicas; one worker's daemon killed (and the node
off the network) under steady load → its replicas are replaced on the other nodes, and no GET
fails for a key whose replica survived.

Skipped with the exact reason when this machine cannot run the nodes (not root, no network
namespaces, a daemon that does not start in one, …).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from balancer.names import server_id
from tests.swarm.deployment import (
    BALANCER_IMAGE,
    SERVER_IMAGE,
    SwarmDeployment,
    wait_ready,
)
from tests.swarm.load import Load, poll, rep, session
from tests.swarm.nodes import Nodes

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPLICAS = 6
READY_TIMEOUT_S = 300.0  # vfs copies each image into each new container: slow to start


@pytest.fixture(scope="module")
def nodes(balancer_image: str, redis_image_name: str) -> Iterator[Nodes]:
    made = Nodes(count=3)
    try:
        try:
            made.up([SERVER_IMAGE, BALANCER_IMAGE, redis_image_name])
        except Exception as exc:  # any step (NodesUnavailable says which): the reason to skip
            pytest.skip(f"multi-node swarm unavailable on this machine: {exc}")
        yield made
    finally:
        problems = made.close()
    assert not problems, problems


@pytest.fixture(scope="module")
def spread(nodes: Nodes, redis_image_name: str) -> Iterator[SwarmDeployment]:
    manager = nodes.nodes[0]
    dep = SwarmDeployment(
        manager.client,
        {"lb-a": 15601, "lb-b": 15602},
        redis_image_name,
        host=manager.address,
        socket=manager.socket,
        env={
            "LB_REPLICAS": str(REPLICAS),
            "LB_SWARM_TIMEOUT_S": "120",
            "LB_SWARM_CONSTRAINTS": "node.role==worker",
        },
    )
    try:
        dep.up()
        dep.ready_s = wait_ready(dep, REPLICAS, READY_TIMEOUT_S)
        yield dep
    finally:
        dep.down()


def placement(dep: SwarmDeployment, nodes: Nodes) -> dict[str, int]:
    """Running replica name → the index of the node its task runs on."""
    where = {}
    for service in dep.replica_services():
        try:
            tasks = service.tasks(filters={"desired-state": "running"})
        except docker.errors.NotFound:
            continue  # removed since the listing
        for task in tasks:
            if task["Status"]["State"] == "running":
                name = service.attrs["Spec"]["Labels"]["chlb.replica"]
                where[name] = nodes.node_of(task["NodeID"]).index
    return where


async def _replaced(s: Any, dep: SwarmDeployment, nodes: Nodes, victims: set[str]) -> bool:
    reps = [await rep(s, p, host=dep.host) for p in dep.ports.values()]
    names = set(reps[0]["replicas"])
    where = await asyncio.to_thread(placement, dep, nodes)
    return (
        all(set(r["replicas"]) == names for r in reps)
        and len(names) == REPLICAS
        and not names & victims
        and set(where) == names
        and not set(where.values()) & nodes.failed
    )


@pytest.mark.timeout(900)
async def test_a_failed_node_s_replicas_are_replaced_on_the_others(
    nodes: Nodes, spread: SwarmDeployment
) -> None:
    dep = spread
    where = await asyncio.to_thread(placement, dep, nodes)
    workers = sorted(set(where.values()))
    print(f"\n[nodes] N={REPLICAS} {dep.ready_s:.0f} s after up; replicas by node: {where}")
    assert len(workers) == 2, where  # on both workers
    async with session() as s:
        failed_node = nodes.nodes[workers[-1] - 1]
        victims = {n for n, i in where.items() if i == failed_node.index}
        # The id a replica answers with is a function of its ring name (``/lb/status`` lists a
        # replica only once its status cache caught up: "Server 5" was missing 50 s in, once).
        victim_ids = {server_id(n) for n in victims}
        load = Load(list(dep.ports.values()), loops=4, max_s=300.0, host=dep.host)
        runner = asyncio.create_task(load.run(s))
        try:
            await asyncio.sleep(3.0)
            assert load.ok > 0 and not load.failures, load.failures[:5]
            served_before = dict(load.served)
            await asyncio.to_thread(nodes.fail, failed_node)
            took = await poll(lambda: _replaced(s, dep, nodes, victims), 240.0, every_s=0.5)
            await asyncio.sleep(3.0)
        finally:
            load.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner, 30.0)
        after = await asyncio.to_thread(placement, dep, nodes)
    survivors_keys = {k for k, sid in served_before.items() if sid not in victim_ids}
    bad = [f for f in load.failures if f[1] in survivors_keys]
    others = [f for f in load.failures if f[1] not in survivors_keys]
    print(
        f"[nodes] node {failed_node.index} failed (daemon SIGKILLed, off the network) with "
        f"{sorted(victims)}; replaced on {sorted(set(after.values()))} "
        f"{'never' if took is None else f'{took:.1f} s'} after: {after}; {load.total} GETs, "
        f"{len(bad)} failed for keys of surviving replicas, {len(others)} for the failed "
        f"node's keys: {others[:3]}"
    )
    assert took is not None, dep.logs()
    assert not bad, bad[:5]

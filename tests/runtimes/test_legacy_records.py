"""Records the previous version wrote (``pid`` + ``ident`` in place of ``locator``) still adopt.

A rolling upgrade meets membership documents and runtime records written before replicas carried
an opaque locator: the process runtime wrote its pid and the process start time, the Docker
runtime the container id as ``ident``, the static runtime neither. Each literal old document
below is read back into a locator its runtime understands, and a real replica process is adopted
from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import fakeredis
import pytest

from balancer.control.health import probe, wait_ready
from balancer.runtimes.base import ReplicaHandle
from balancer.runtimes.process import ProcessRuntime
from balancer.runtimes.static import StaticRuntime
from balancer.state import keys
from balancer.state.codec import membership_from_json, membership_json
from balancer.state.redis_store import RedisStore
from balancer.state.store import Membership, Replica

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/stat"), reason="the process start time comes from /proc"
)


def start_time(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[19]


def old_document(address: str, pid: int | None, ident: str) -> dict[str, Any]:
    """A membership document exactly as the previous version's ``membership_json`` wrote it."""
    return {
        "epoch": 3,
        "target": 1,
        "settings": None,
        "ring_state": "",
        "replicas": [
            {
                "name": "Server 1",
                "index": 1,
                "address": address,
                "weight": 1,
                "pid": pid,
                "ident": ident,
            }
        ],
    }


@pytest.fixture
async def replica() -> AsyncIterator[tuple[ReplicaHandle, int]]:
    """A running replica process (its handle and pid); stopped by its starter afterwards."""
    starter = ProcessRuntime(stop_grace_s=2.0)
    try:
        handle = await starter.spawn("Server 1", "1")
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, handle.address, 15.0)
        pid = starter.describe(handle)["pid"]
        assert isinstance(pid, int)
        yield handle, pid
    finally:
        await starter.close()


async def adopts_and_stops(handle: ReplicaHandle) -> None:
    heir = ProcessRuntime(stop_grace_s=2.0)
    try:
        assert await heir.adopt(handle) is True
        assert [h.name for h in await heir.list()] == [handle.name]
        await heir.stop(handle.name)
        async with aiohttp.ClientSession() as session:
            assert not await probe(session, handle.address, 0.5)
    finally:
        await heir.close()


def handle_of(replica: Replica) -> ReplicaHandle:
    return ReplicaHandle(replica.name, "1", replica.address, replica.locator)


async def test_an_old_membership_document_adopts_its_process(
    replica: tuple[ReplicaHandle, int],
) -> None:
    handle, pid = replica
    old = old_document(handle.address, pid, start_time(pid))
    member = membership_from_json(json.loads(json.dumps(old))).replicas[0]
    await adopts_and_stops(handle_of(member))


async def test_an_old_document_with_another_start_time_is_not_adopted(
    replica: tuple[ReplicaHandle, int],
) -> None:
    """The old ``ident`` still guards against a recycled pid."""
    handle, pid = replica
    old = old_document(handle.address, pid, str(int(start_time(pid)) + 1))
    member = membership_from_json(old).replicas[0]
    heir = ProcessRuntime()
    try:
        assert await heir.adopt(handle_of(member)) is False
    finally:
        await heir.close()


async def test_an_old_document_and_record_in_redis_adopt_their_process(
    replica: tuple[ReplicaHandle, int],
) -> None:
    handle, pid = replica
    redis = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())
    store = RedisStore(redis, prefix="t:")
    try:
        old = old_document(handle.address, pid, start_time(pid))
        await redis.hset(keys.membership("t:"), mapping={"epoch": 3, "doc": json.dumps(old)})
        record: dict[str, object] = {"name": "Server 1", "server_id": "1"}
        record |= {"address": handle.address, "pid": pid, "ident": start_time(pid)}
        await redis.hset(keys.replicas("t:"), "Server 1", json.dumps(record))
        member = (await store.membership()).replicas[0]
        (recorded,) = await store.handles()
        assert recorded == handle_of(member)
        await adopts_and_stops(recorded)
    finally:
        await store.close()


def test_an_old_docker_record_keeps_its_container_id_as_locator() -> None:
    record = {"name": "S1", "server_id": "S1", "address": "172.18.0.5:5000"}
    handle = ReplicaHandle.from_json(record | {"pid": None, "ident": "4f2a" * 16})
    assert handle.locator == "4f2a" * 16  # the Docker runtime's locator is the container id


async def test_an_old_static_record_adopts_by_its_address() -> None:
    old = old_document("127.0.0.1:8081", None, "")
    member = membership_from_json(old).replicas[0]
    runtime = StaticRuntime(["127.0.0.1:8080", "127.0.0.1:8081"])
    assert await runtime.adopt(handle_of(member)) is True
    assert [h.address for h in await runtime.list()] == ["127.0.0.1:8081"]
    assert (await runtime.spawn("Server 2", "2")).address == "127.0.0.1:8080"


def test_the_document_is_written_with_a_locator_only() -> None:
    member = Replica("Server 1", 1, "127.0.0.1:1", locator="opaque")
    (written,) = membership_json(Membership(1, (member,), 1))["replicas"]
    assert written == {
        "name": "Server 1",
        "index": 1,
        "address": "127.0.0.1:1",
        "weight": 1,
        "locator": "opaque",
    }
    read = membership_from_json({"epoch": 1, "target": 1, "replicas": [written]})
    assert read.replicas == (member,)

"""The runtime contract: the same test bodies over every ``ReplicaRuntime``.

Runtimes: process (real ``lb-server`` processes), in-process (the test runtime), static (the
``--backends`` list, over backends the test serves itself) and Docker (a real daemon; skipped
with the reason when there is none). Where a runtime cannot do what the process runtime does,
its harness says so (``owns_replicas``, ``watches_replicas``, ``engine_keeps_record``; see
``balancer.runtimes.base.ReplicaRuntime``) and the body checks the semantics it has instead:
the static runtime's ``stop`` stops routing to a backend, not the backend; Docker's ``list`` is
the daemon's. A second runtime object on the same machine stands for the balancer after a
restart. Adding a runtime = a module, a registry entry and a harness here that passes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace

import aiohttp
import fakeredis
import pytest

from balancer.api.openapi import spec
from balancer.control.health import probe
from balancer.errors import RuntimeFailure
from balancer.runtimes.base import ReplicaHandle
from balancer.state.codec import membership_from_json, membership_json
from balancer.state.memory import InMemoryStore
from balancer.state.redis_store import RedisStore
from balancer.state.store import Membership, Replica
from tests.conftest import eventually
from tests.runtimes.conftest import Harness


async def home(handle: ReplicaHandle) -> object:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{handle.address}/home", timeout=aiohttp.ClientTimeout(5)) as resp,
    ):
        assert resp.status == 200
        return await resp.json()


async def answers(handle: ReplicaHandle) -> bool:
    async with aiohttp.ClientSession() as session:
        return bool(await probe(session, handle.address, 1.0))


async def names(runtime_list: Awaitable[list[ReplicaHandle]]) -> list[str]:
    return sorted(h.name for h in await runtime_list)


async def gone_or_routed_off(harness: Harness, handle: ReplicaHandle) -> None:
    """After ``stop``/``close``: the replica ended, or (static) only the routing to it did."""
    if harness.owns_replicas:
        assert not await harness.runs(handle)
        assert not await answers(handle)
    else:
        assert await harness.runs(handle) and await answers(handle)


# --- spawn and list ----------------------------------------------------------------------------


async def test_a_spawned_replica_answers_home_as_its_server_id(harness: Harness) -> None:
    runtime = harness.new_runtime()
    handle = await harness.spawn(runtime, "Server 7", "7")
    assert (handle.name, handle.server_id) == ("Server 7", "7")
    assert await home(handle) == {
        "message": f"Hello from Server: {harness.home_id(handle)}",
        "status": "successful",
    }
    assert await runtime.list() == [handle]


async def test_list_holds_every_replica_it_runs(harness: Harness) -> None:
    runtime = harness.new_runtime()
    first = await harness.spawn(runtime, "Server 1", "1")
    second = await harness.spawn(runtime, "Server 2", "2")
    assert first.address != second.address
    assert {h.name: h for h in await runtime.list()} == {"Server 1": first, "Server 2": second}


async def test_spawning_a_name_it_runs_fails_and_keeps_the_first(harness: Harness) -> None:
    runtime = harness.new_runtime()
    first = await harness.spawn(runtime, "Server 1", "1")
    with pytest.raises(RuntimeFailure):
        await runtime.spawn("Server 1", "1")
    assert await runtime.list() == [first]
    assert await harness.runs(first) and await answers(first)


# --- stop --------------------------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True], ids=["graceful", "force"])
async def test_stop_ends_a_replica_and_its_tracking(harness: Harness, force: bool) -> None:
    runtime = harness.new_runtime()
    kept = await harness.spawn(runtime, "Server 1", "1")
    stopped = await harness.spawn(runtime, "Server 2", "2")
    await runtime.stop(stopped.name, force=force)
    assert await runtime.list() == [kept]
    await gone_or_routed_off(harness, stopped)
    assert await answers(kept)
    again = await harness.spawn(runtime, "Server 2", "2")  # the name (static: its slot) is free
    assert await names(runtime.list()) == ["Server 1", "Server 2"]
    assert await answers(again)


async def test_stopping_an_unknown_name_is_a_no_op(harness: Harness) -> None:
    runtime = harness.new_runtime()
    handle = await harness.spawn(runtime, "Server 1", "1")
    await runtime.stop("nobody")
    await runtime.stop("nobody", force=True)
    assert await runtime.list() == [handle]
    assert await harness.runs(handle) and await answers(handle)


# --- adopt (the balancer restarted) ------------------------------------------------------------


async def test_a_new_runtime_adopts_after_the_balancer_restarts(harness: Harness) -> None:
    before = harness.new_runtime()
    handle = await harness.spawn(before, "Server 1", "1")
    after = harness.new_runtime()  # the restarted balancer's: it knows only the handle
    assert await after.adopt(handle) is True
    assert await after.adopt(handle) is True  # already tracked: still True
    assert [h for h in await after.list() if h.name == handle.name] == [handle]
    assert await answers(handle)  # adoption left it serving
    await after.stop(handle.name)
    assert handle.name not in await names(after.list())
    await gone_or_routed_off(harness, handle)


async def test_adopting_a_gone_replica_is_false(harness: Harness) -> None:
    before = harness.new_runtime()
    handle = await harness.spawn(before, "Server 1", "1")
    await before.stop(handle.name)
    after = harness.new_runtime()
    if harness.owns_replicas:
        assert await after.adopt(handle) is False
        assert await after.list() == []
        return
    # A static backend outlives its replica: any free address of the pool is adopted, without
    # asking the backend; an address another replica holds is refused.
    assert await after.adopt(handle) is True
    assert await after.adopt(replace(handle, name="Server 2")) is False
    assert await names(after.list()) == ["Server 1"]


@pytest.mark.parametrize(
    "store_kind", ["memory record", "fakeredis record", "membership json", "fakeredis membership"]
)
async def test_a_locator_survives_a_store_round_trip(harness: Harness, store_kind: str) -> None:
    before = harness.new_runtime()
    handle = await harness.spawn(before, "Server 3", "3")
    read = await ROUND_TRIPS[store_kind](handle)
    assert read == handle
    after = harness.new_runtime()
    assert await after.adopt(read) is True
    assert [h for h in await after.list() if h.name == handle.name] == [handle]
    await after.stop(handle.name, force=True)
    await gone_or_routed_off(harness, handle)


# --- release and close -------------------------------------------------------------------------


async def test_release_leaves_replicas_running_and_stops_tracking(harness: Harness) -> None:
    runtime = harness.new_runtime()
    handle = await harness.spawn(runtime, "Server 1", "1")
    await runtime.release()
    assert await harness.runs(handle) and await answers(handle)
    # Docker's list is the daemon's: release has nothing to drop there.
    assert await runtime.list() == ([handle] if harness.engine_keeps_record else [])
    heir = harness.new_runtime()
    assert await heir.adopt(handle) is True
    await heir.close()
    await gone_or_routed_off(harness, handle)


async def test_close_stops_what_it_started_or_adopted(harness: Harness) -> None:
    other = harness.new_runtime()
    adopted = await harness.spawn(other, "Server 1", "1")
    untouched = await harness.spawn(other, "Server 2", "2")
    runtime = harness.new_runtime()  # adopts first, as a restarted leader does
    assert await runtime.adopt(adopted) is True
    started = await harness.spawn(runtime, "Server 3", "3")
    await runtime.close()
    assert await runtime.list() == []
    await gone_or_routed_off(harness, started)
    await gone_or_routed_off(harness, adopted)
    if harness.engine_keeps_record:  # Docker: close stops every container of the deployment
        await gone_or_routed_off(harness, untouched)
    else:
        assert await harness.runs(untouched) and await answers(untouched)


# --- a replica that dies on its own ------------------------------------------------------------


async def test_a_replica_that_dies_on_its_own_leaves_the_list(harness: Harness) -> None:
    runtime = harness.new_runtime()
    kept = await harness.spawn(runtime, "Server 1", "1")
    dying = await harness.spawn(runtime, "Server 2", "2")
    await harness.kill(dying)

    async def dead() -> bool:
        return not await harness.runs(dying)

    await eventually(dead, timeout_s=10.0)
    assert not await answers(dying)
    if harness.watches_replicas:

        async def dropped() -> bool:
            return await runtime.list() == [kept]

        await eventually(dropped, timeout_s=10.0)
        assert await runtime.adopt(dying) is False  # tracked, but no longer running
    else:  # static: listed until stopped; the health checks evict it
        assert await names(runtime.list()) == ["Server 1", "Server 2"]
    await runtime.stop(dying.name)  # nothing left to end: no error
    assert await runtime.list() == [kept]


# --- describe ----------------------------------------------------------------------------------


async def test_describe_shows_what_the_status_schema_declares(harness: Harness) -> None:
    runtime = harness.new_runtime()
    handle = await harness.spawn(runtime, "Server 1", "1")
    described = runtime.describe(handle)
    status = spec()["components"]["schemas"]["Status"]
    replica_fields = status["properties"]["replicas"]["items"]["properties"]
    assert set(described) <= set(replica_fields)
    harness.check_description(handle, described)
    await runtime.stop(handle.name)
    assert set(runtime.describe(handle)) <= set(replica_fields)  # a gone replica: no error


# --- the store round trips ---------------------------------------------------------------------


async def _memory_record(handle: ReplicaHandle) -> ReplicaHandle:
    store = InMemoryStore()
    await store.record_handle(handle)
    (read,) = await store.handles()
    return read


async def _fakeredis_record(handle: ReplicaHandle) -> ReplicaHandle:
    server = fakeredis.FakeServer()
    writer = RedisStore(fakeredis.aioredis.FakeRedis(server=server), prefix="t:")
    reader = RedisStore(fakeredis.aioredis.FakeRedis(server=server), prefix="t:")
    try:
        await writer.record_handle(handle)
        (read,) = await reader.handles()
        return read
    finally:
        await writer.close()
        await reader.close()


def _member(handle: ReplicaHandle) -> Replica:
    return Replica(handle.name, 1, handle.address, locator=handle.locator)


def _handle(member: Replica, handle: ReplicaHandle) -> ReplicaHandle:
    """The handle the leader makes of a member when its record is lost (the reconciler's)."""
    return ReplicaHandle(member.name, handle.server_id, member.address, member.locator)


async def _membership_json(handle: ReplicaHandle) -> ReplicaHandle:
    text = json.dumps(membership_json(Membership(1, (_member(handle),), 1)))
    (member,) = membership_from_json(json.loads(text)).replicas
    return _handle(member, handle)


async def _fakeredis_membership(handle: ReplicaHandle) -> ReplicaHandle:
    server = fakeredis.FakeServer()
    writer = RedisStore(fakeredis.aioredis.FakeRedis(server=server), prefix="t:")
    reader = RedisStore(fakeredis.aioredis.FakeRedis(server=server), prefix="t:")
    try:
        assert await writer.commit([_member(handle)], expected_epoch=0, target=1) is not None
        (member,) = (await reader.membership()).replicas
        return _handle(member, handle)
    finally:
        await writer.close()
        await reader.close()


ROUND_TRIPS: dict[str, Callable[[ReplicaHandle], Awaitable[ReplicaHandle]]] = {
    "memory record": _memory_record,
    "fakeredis record": _fakeredis_record,
    "membership json": _membership_json,
    "fakeredis membership": _fakeredis_membership,
}


def test_every_registered_runtime_runs_this_contract() -> None:
    """Adding a runtime is one module, one registry entry and this suite passing: a runtime
    the registry knows but no harness runs would skip the contract silently."""
    from balancer.runtimes.registry import RUNTIMES
    from tests.runtimes.conftest import HARNESSED

    assert set(RUNTIMES.names()) == set(HARNESSED)

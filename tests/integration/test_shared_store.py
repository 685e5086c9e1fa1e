"""The shared parts of the ``Store`` contract, with the same test bodies against every store.

Covers what a second instance (or the next leader) relies on: the target N kept with the
membership, runtime records, the instance registry with its TTL, ``restore`` after data loss,
and that ``RedisStore`` reports every Redis failure as ``StoreUnavailable``. Backends: in
memory, ``RedisStore`` over fakeredis, and over a real redis-server (skipped with a reason when
there is none). Each factory call is another instance's view of the same shared state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import fakeredis
import pytest
from redis.exceptions import RedisError

from balancer.errors import StaleLeaderError, StoreUnavailable
from balancer.hashing import RingSettings
from balancer.runtimes.base import ReplicaHandle
from balancer.state import keys
from balancer.state.memory import InMemoryStore
from balancer.state.redis_store import RedisStore, redis_client
from balancer.state.store import Membership, Replica, Store
from tests.support.ports import free_port
from tests.support.shared_redis import shared_redis


@dataclass
class Backend:
    kind: str
    make: Callable[[], Store]  # another instance's view of the same state
    server: fakeredis.FakeServer | None = None  # fakeredis only: to cut the connection


@pytest.fixture(params=["memory", "fakeredis", "redis"])
async def backend(request: pytest.FixtureRequest, redis_url: str | None) -> AsyncIterator[Backend]:
    kind = request.param
    made: list[RedisStore] = []
    if kind == "memory":
        memory = InMemoryStore()
        yield Backend(kind, lambda: memory)
        return
    async with shared_redis(kind, redis_url, socket_timeout_s=2.0) as redis_:

        def factory() -> Store:
            made.append(RedisStore(redis_.client(), prefix=redis_.prefix))
            return made[-1]

        yield Backend(kind, factory, redis_.server)
        for store in made:
            await store.close()


def replica(i: int, *, locator: str = "") -> Replica:
    return Replica(f"S{i}", i, f"127.0.0.1:{9000 + i}", 1, locator)


def by_name(handles: list[ReplicaHandle]) -> dict[str, ReplicaHandle]:
    names = [h.name for h in handles]
    assert len(names) == len(set(names)), f"duplicate records: {names}"
    return {h.name: h for h in handles}


# --- target N ----------------------------------------------------------------------------------


async def test_target_is_none_until_the_first_commit_sets_it(backend: Backend) -> None:
    assert (await backend.make().membership()).target is None
    committed = await backend.make().commit([replica(1)], expected_epoch=0)
    assert committed is not None and committed.target is None
    assert (await backend.make().membership()).target is None


async def test_target_is_persisted_with_each_commit(backend: Backend) -> None:
    writer, reader = backend.make(), backend.make()
    first = await writer.commit([replica(1), replica(2)], expected_epoch=0, target=3)
    assert first is not None and first.target == 3
    assert await reader.membership() == Membership(1, (replica(1), replica(2)), 3)
    # A replacement keeps N while the members change; a later commit moves it.
    second = await writer.commit([replica(2), replica(4)], expected_epoch=1, target=3)
    assert second == Membership(2, (replica(2), replica(4)), 3)
    assert await reader.membership() == second
    third = await reader.commit([replica(2)], expected_epoch=2, target=0)
    assert third is not None
    assert (await writer.membership()).target == 0  # zero is a target, not "unset"
    # Emptying the ring for good resets it to "never booted".
    assert await writer.commit([], expected_epoch=3, target=None) is not None
    assert await reader.membership() == Membership(4, (), None)


async def test_a_refused_commit_leaves_the_target_alone(backend: Backend) -> None:
    a, b = backend.make(), backend.make()
    await a.commit([replica(1)], expected_epoch=0, target=5)
    assert await b.commit([replica(9)], expected_epoch=0, target=1) is None
    assert await b.membership() == Membership(1, (replica(1),), 5)


async def test_member_locator_survives_a_commit(backend: Backend) -> None:
    members = [replica(1, locator="4321:98765"), replica(2)]
    await backend.make().commit(members, expected_epoch=0, target=2)
    read = await backend.make().membership()
    assert read.replicas == tuple(members)
    assert read.replicas[0].locator == "4321:98765"
    assert read.replicas[1].locator == ""


# --- restore (the store lost its data) ----------------------------------------------------------


async def test_restore_writes_a_newer_membership_back_and_wakes_waiters(backend: Backend) -> None:
    store, watcher = backend.make(), backend.make()
    await watcher.wait_for_change(0, 0.1)  # subscribe before the change
    waiting = asyncio.create_task(watcher.wait_for_change(0, 5.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    known = Membership(7, (replica(1, locator="10:t"), replica(3)), 4)
    assert await store.restore(known) is True
    await asyncio.wait_for(waiting, 2.0)
    assert await watcher.membership() == known
    # Commits go on from the restored epoch.
    assert await store.commit([replica(1)], expected_epoch=0, target=4) is None
    after = await store.commit([replica(1)], expected_epoch=7, target=4)
    assert after is not None and after.epoch == 8


async def test_restore_never_goes_back_in_epoch(backend: Backend) -> None:
    store = backend.make()
    await store.commit([replica(1)], expected_epoch=0, target=1)
    current = await store.commit([replica(1), replica(2)], expected_epoch=1, target=2)
    for epoch in (0, 1, 2):
        assert await store.restore(Membership(epoch, (replica(9),), 9)) is False
        assert await backend.make().membership() == current


# --- runtime records ----------------------------------------------------------------------------


async def test_routing_settings_and_ring_state_round_trip(backend: Backend) -> None:
    settings = RingSettings(algorithm="maglev", balance_factor=1.25)
    await backend.make().commit(
        [replica(1)], expected_epoch=0, target=1, settings=settings, ring_state="abc:def"
    )
    read = await backend.make().membership()
    assert (read.settings, read.ring_state) == (settings, "abc:def")
    assert read.settings is not None and read.settings.hash_seed == settings.hash_seed


async def test_events_are_shared_bounded_and_newest_first(backend: Backend) -> None:
    writer, reader = backend.make(), backend.make()
    for epoch in range(1, 6):
        await writer.record_event({"epoch": epoch, "kind": "add", "moved_share": 0.25}, 3)
    assert [e["epoch"] for e in await reader.events(10)] == [5, 4, 3]
    assert [e["epoch"] for e in await reader.events(2)] == [5, 4]


async def test_runtime_records_round_trip_between_instances(backend: Backend) -> None:
    writer, reader = backend.make(), backend.make()
    assert await reader.handles() == []
    process = ReplicaHandle("Server 1", "1", "127.0.0.1:41001", "123456:8877665")
    static = ReplicaHandle("web-3", "web-3", "10.0.0.3:80")  # no locator
    odd = ReplicaHandle("Server é", "é", "[::1]:8080", "0")  # "0" is a locator, not none
    for handle in (process, static, odd):
        await writer.record_handle(handle)
    read = by_name(await reader.handles())
    assert read == {"Server 1": process, "web-3": static, "Server é": odd}
    assert read["web-3"].locator == ""
    assert read["Server é"].locator == "0"
    assert all(type(h.locator) is str for h in read.values())


async def test_recording_a_name_again_replaces_its_record(backend: Backend) -> None:
    store = backend.make()
    await store.record_handle(ReplicaHandle("S1", "S1", "127.0.0.1:1", "11:a"))
    await store.record_handle(ReplicaHandle("S1", "S1", "127.0.0.1:2", "22:b"))
    assert await backend.make().handles() == [ReplicaHandle("S1", "S1", "127.0.0.1:2", "22:b")]


async def test_drop_handle_forgets_one_record(backend: Backend) -> None:
    store = backend.make()
    for i in (1, 2, 3):
        await store.record_handle(ReplicaHandle(f"S{i}", f"S{i}", f"127.0.0.1:{i}", str(i)))
    await backend.make().drop_handle("S2")
    await store.drop_handle("never-recorded")  # not an error
    assert sorted(by_name(await store.handles())) == ["S1", "S3"]


async def test_records_are_independent_of_membership(backend: Backend) -> None:
    store = backend.make()
    await store.record_handle(ReplicaHandle("S7", "S7", "127.0.0.1:7", "7"))
    await store.commit([replica(1)], expected_epoch=0, target=1)
    await store.commit([], expected_epoch=1, target=None)
    assert [h.name for h in await backend.make().handles()] == ["S7"]


# --- instance registry --------------------------------------------------------------------------


async def test_announcements_are_visible_to_every_instance(backend: Backend) -> None:
    a, b = backend.make(), backend.make()
    assert await b.instances() == {}
    info_a = {"role": "leader", "epoch": 3, "names": ["Server 1", "Server é"], "nested": {"x": 1}}
    await a.announce("inst-a", info_a, 5.0)
    await b.announce("inst-b", {"role": "follower"}, 5.0)
    assert await b.instances() == {"inst-a": info_a, "inst-b": {"role": "follower"}}
    # Announcing again replaces the status; withdrawing removes only that instance.
    await a.announce("inst-a", {"role": "follower"}, 5.0)
    await a.withdraw("inst-b")
    await a.withdraw("never-announced")  # not an error
    assert await backend.make().instances() == {"inst-a": {"role": "follower"}}


async def test_the_registry_keeps_a_copy_not_the_callers_dict(backend: Backend) -> None:
    store = backend.make()
    info: dict[str, object] = {"epoch": 1}
    await store.announce("a", info, 5.0)
    info["epoch"] = 2  # the caller reuses its dict for the next round
    assert await store.instances() == {"a": {"epoch": 1}}


async def test_an_announcement_expires_after_its_ttl(backend: Backend) -> None:
    a, b = backend.make(), backend.make()
    await a.announce("short", {"n": 1}, 0.2)
    await a.announce("long", {"n": 2}, 5.0)
    assert set(await b.instances()) == {"short", "long"}
    await asyncio.sleep(0.35)
    assert await b.instances() == {"long": {"n": 2}}


async def test_announcing_again_extends_the_ttl(backend: Backend) -> None:
    store = backend.make()
    await store.announce("a", {"round": 1}, 0.5)
    await asyncio.sleep(0.3)
    await store.announce("a", {"round": 2}, 0.5)  # refreshed before it ran out
    await asyncio.sleep(0.3)  # 0.6 s after the first announcement, 0.3 s after the second
    assert await backend.make().instances() == {"a": {"round": 2}}
    await asyncio.sleep(0.35)
    assert await backend.make().instances() == {}


async def test_announcements_do_not_count_as_replica_liveness(backend: Backend) -> None:
    store = backend.make()
    await store.announce("S1", {"n": 1}, 5.0)
    await store.mark_alive("S2", 5.0)
    assert await store.alive() == {"S2"}
    assert set(await store.instances()) == {"S1"}


# --- fencing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["fakeredis", "redis"], indirect=True)  # memory: unfenced
async def test_a_stale_token_cannot_restore_nor_commit(backend: Backend) -> None:
    store = backend.make()
    assert isinstance(store, RedisStore)
    await store._redis.set(keys.fence(store._prefix), 5)  # the latest leader's token
    with pytest.raises(StaleLeaderError):
        await store.restore(Membership(3, (replica(1),), 1), fence_token=4)
    assert await store.membership() == Membership()
    assert await store.restore(Membership(3, (replica(1),), 1), fence_token=5)
    with pytest.raises(StaleLeaderError):
        await store.commit([], expected_epoch=3, fence_token=4, target=None)
    assert (await store.membership()).target == 1


# --- Redis failures are StoreUnavailable --------------------------------------------------------

Call = Callable[[Store], Awaitable[object]]

CALLS: dict[str, Call] = {
    "membership": lambda s: s.membership(),
    "commit": lambda s: s.commit([replica(1)], expected_epoch=0, target=1),
    "commit fenced": lambda s: s.commit([replica(1)], expected_epoch=0, fence_token=3, target=1),
    "restore": lambda s: s.restore(Membership(4, (replica(1),), 1)),
    "wait_for_change": lambda s: s.wait_for_change(0, 0.5),
    "mark_alive": lambda s: s.mark_alive("S1", 1.0),
    "mark_dead": lambda s: s.mark_dead("S1"),
    "alive": lambda s: s.alive(),
    "record_handle": lambda s: s.record_handle(ReplicaHandle("S1", "S1", "h:1", "1:x")),
    "drop_handle": lambda s: s.drop_handle("S1"),
    "handles": lambda s: s.handles(),
    "announce": lambda s: s.announce("i", {"a": 1}, 1.0),
    "withdraw": lambda s: s.withdraw("i"),
    "instances": lambda s: s.instances(),
}


@pytest.fixture
async def fake_server() -> AsyncIterator[tuple[fakeredis.FakeServer, RedisStore]]:
    server = fakeredis.FakeServer()
    store = RedisStore(fakeredis.aioredis.FakeRedis(server=server), prefix="t:")
    # Some state to read back, so a method that answered from a cache would be caught.
    await store.commit([replica(1)], expected_epoch=0, target=1)
    await store.record_handle(ReplicaHandle("S1", "S1", "h:1", "1"))
    await store.announce("i", {"a": 1}, 30.0)
    await store.mark_alive("S1", 30.0)
    yield server, store
    server.connected = True
    await store.close()


@pytest.mark.parametrize("call", list(CALLS))
async def test_every_method_raises_store_unavailable_when_redis_is_down(
    fake_server: tuple[fakeredis.FakeServer, RedisStore], call: str
) -> None:
    server, store = fake_server
    server.connected = False
    with pytest.raises(StoreUnavailable) as caught:
        await asyncio.wait_for(CALLS[call](store), 5.0)
    assert not isinstance(caught.value, RedisError)
    assert isinstance(caught.value.__cause__, RedisError | OSError)
    # The outage is over: the same client works again and nothing was lost or half-written.
    server.connected = True
    assert await store.membership() == Membership(1, (replica(1),), 1)
    assert [h.name for h in await store.handles()] == ["S1"]


@pytest.mark.parametrize("call", ["membership", "commit", "record_handle", "announce", "alive"])
async def test_an_unreachable_redis_server_is_store_unavailable(call: str) -> None:
    """A real client against a closed port: the connection error is wrapped too."""
    store = RedisStore(redis_client(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5))
    try:
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(CALLS[call](store), 5.0)
    finally:
        await store.close()

"""``ReplicaManager`` in shared mode: leadership, fencing, runtime records and the target N kept
in the store (adoption, strays and replacement: ``test_reconciler.py``).

Replicas are real aiohttp apps served from the test's loop (``InProcessRuntime``); the store is
in memory (or fakeredis, for the fencing token); leadership is a fake the test flips by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import fakeredis
import pytest

from balancer.errors import NotLeaderError, StaleLeaderError
from balancer.runtimes.base import ReplicaHandle
from balancer.state import keys
from balancer.state.redis_store import RedisStore
from balancer.state.store import Membership
from tests.support.manager_rig import (
    FakeLeadership,
    RecordingStore,
    Rig,
    make_manager,
    rig,
)
from tests.support.runtime import InProcessRuntime

__all__ = ["rig"]  # the fixture


# --- leadership -------------------------------------------------------------------------------


async def test_a_follower_changes_nothing(rig: Rig) -> None:
    await rig.manager.add(2, ["a", "b"])
    before = await rig.membership()
    records = await rig.records()
    spawned, commits = list(rig.runtime.spawned), len(rig.store.commits)
    rig.leadership.is_leader = False
    rig.leadership.token = None
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "add": lambda: rig.manager.add(1, ["c"]),
        "add replacement": lambda: rig.manager.add(1, [], grow=False),
        "remove": lambda: rig.manager.remove(1, ["a"]),
        "evict": lambda: rig.manager.evict("b"),
        "set_target": lambda: rig.manager.set_target(5),
        "stop_strays": lambda: rig.manager.stop_strays(["x"]),
        "remove_all": lambda: rig.manager.remove_all(),
    }
    for name, call in calls.items():
        with pytest.raises(NotLeaderError):
            await call()
        assert await rig.membership() == before, name
    assert await rig.records() == records
    assert rig.runtime.spawned == spawned
    assert rig.runtime.stopped == []
    assert await rig.running() == {"a", "b"}
    assert len(rig.store.commits) == commits


async def test_losing_the_lease_while_replicas_start_commits_nothing_and_stops_them() -> None:
    store, runtime = RecordingStore(), InProcessRuntime()
    leadership = FakeLeadership()

    async def lease_lost_meanwhile(address: str) -> None:
        leadership.is_leader = False

    manager = make_manager(store, runtime, leadership, wait_ready=lease_lost_meanwhile)
    try:
        with pytest.raises(NotLeaderError):
            await manager.add(2, ["a", "b"])
        assert await store.membership() == Membership()
        assert store.commits == []
        assert sorted(runtime.stopped) == ["a", "b"]
        assert await runtime.list() == []
        assert await store.handles() == []
    finally:
        await runtime.close()


async def test_every_commit_carries_the_current_fencing_token(rig: Rig) -> None:
    await rig.manager.add(2, ["a", "b"])
    rig.leadership.token = 9  # a later term of this same instance
    await rig.manager.remove(1, ["a"])
    await rig.manager.set_target(4)
    rig.leadership.token = 11
    await rig.manager.evict("b")
    await rig.manager.remove_all()
    assert [c.fence_token for c in rig.store.commits] == [7, 9, 9, 11, 11]


@pytest.fixture
async def fenced() -> AsyncIterator[tuple[RedisStore, InProcessRuntime]]:
    server = fakeredis.FakeServer()
    store = RedisStore(fakeredis.aioredis.FakeRedis(server=server), prefix="t:")
    await store._redis.set(keys.fence("t:"), 7)  # the latest leader's token
    runtime = InProcessRuntime()
    yield store, runtime
    await runtime.close()
    await store.close()


async def test_a_stale_leaders_add_is_fenced_off_and_leaves_nothing_behind(
    fenced: tuple[RedisStore, InProcessRuntime],
) -> None:
    store, runtime = fenced
    manager = make_manager(store, runtime, FakeLeadership(token=6))
    with pytest.raises(StaleLeaderError):
        await manager.add(2, ["a", "b"])
    assert await store.membership() == Membership()
    assert sorted(runtime.stopped) == ["a", "b"]
    assert await runtime.list() == []
    assert await store.handles() == []
    # The current leader's token is accepted.
    current = make_manager(store, runtime, FakeLeadership(token=7))
    added = await current.add(1, ["c"])
    assert added.names == ["c"] and added.target == 1
    assert (await store.membership()).names == ["c"]


async def test_a_lease_lost_while_a_change_is_prepared_is_fenced_off(
    fenced: tuple[RedisStore, InProcessRuntime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease runs out (the elector's timer clears the token) and a successor takes token 8
    while the commit is being prepared: the write must carry the token of the term it was
    decided in (7, refused), never no token at all (an unfenced write the store accepts)."""
    store, runtime = fenced
    leadership = FakeLeadership(token=7)
    manager = make_manager(store, runtime, leadership)
    await manager.add(1, ["a"])
    read = store.membership
    reads: list[int] = []

    async def lease_lost_meanwhile() -> Membership:
        current = await read()
        reads.append(current.epoch)
        if len(reads) == 2:  # set_weight's check, then the commit's read: the lease runs out
            leadership.is_leader, leadership.token = False, None
            await store._redis.set(keys.fence("t:"), 8)  # the successor's term
        return current

    monkeypatch.setattr(store, "membership", lease_lost_meanwhile)
    before = await read()
    with pytest.raises(StaleLeaderError):
        await manager.set_weight("a", 3)
    assert await read() == before


async def test_a_stale_leaders_remove_changes_nothing(
    fenced: tuple[RedisStore, InProcessRuntime],
) -> None:
    store, runtime = fenced
    await make_manager(store, runtime, FakeLeadership(token=7)).add(2, ["a", "b"])
    before = await store.membership()
    stale = make_manager(store, runtime, FakeLeadership(token=3))
    with pytest.raises(StaleLeaderError):
        await stale.remove(1, ["a"])
    with pytest.raises(StaleLeaderError):
        await stale.evict("b")
    assert await store.membership() == before
    assert {h.name for h in await runtime.list()} == {"a", "b"}
    assert {h.name for h in await store.handles()} == {"a", "b"}


# --- runtime records ----------------------------------------------------------------------------


async def test_add_records_each_replica_before_it_joins() -> None:
    store, runtime = RecordingStore(), InProcessRuntime()
    seen: dict[str, tuple[set[str], list[str]]] = {}

    async def inspect(address: str) -> None:
        # While a replica is starting, its record exists but it is not yet a member.
        records = {h.name for h in await store.handles() if h.address == address}
        seen[address] = (records, (await store.membership()).names)

    manager = make_manager(store, runtime, FakeLeadership(), wait_ready=inspect)
    try:
        added = await manager.add(2, ["a", "b"])
        assert sorted(records for records, _ in seen.values()) == [{"a"}, {"b"}]
        assert all(members == [] for _, members in seen.values())
        records = {h.name: h for h in await store.handles()}
        assert records == {h.name: h for h in await runtime.list()}
        assert {r.name: r.address for r in added.replicas} == {
            name: h.address for name, h in records.items()
        }
    finally:
        await runtime.close()


async def test_remove_and_evict_drop_the_records(rig: Rig) -> None:
    await rig.manager.add(3, ["a", "b", "c"])
    assert set(await rig.records()) == {"a", "b", "c"}
    await rig.manager.remove(1, ["a"])
    assert set(await rig.records()) == {"b", "c"}
    assert await rig.manager.evict("b") is True
    assert set(await rig.records()) == {"c"}
    assert await rig.running() == {"c"}
    assert rig.runtime.stopped == ["a", "b"]
    assert (await rig.membership()).names == ["c"]


async def test_evicting_a_non_member_is_false_and_touches_nothing(rig: Rig) -> None:
    await rig.manager.add(1, ["a"])
    before = await rig.membership()
    assert await rig.manager.evict("gone") is False
    assert await rig.membership() == before
    assert rig.runtime.stopped == []


# --- target N -----------------------------------------------------------------------------------


async def test_the_target_follows_add_and_remove_but_not_replacements(rig: Rig) -> None:
    m = await rig.manager.add(2, ["a", "b"])
    assert m.target == 2  # the first add sets N from the member count
    m = await rig.manager.add(1, [], grow=False)  # a replacement
    assert (len(m.replicas), m.target) == (3, 2)
    m = await rig.manager.add(2, ["c", "d"])
    assert (len(m.replicas), m.target) == (5, 4)
    m = await rig.manager.remove(1, ["a"])
    assert (len(m.replicas), m.target) == (4, 3)
    assert await rig.manager.evict("b") is True  # a failure does not move N
    m = await rig.membership()
    assert (len(m.replicas), m.target) == (3, 3)
    m = await rig.manager.remove(2, [])
    assert (len(m.replicas), m.target) == (1, 1)
    assert [c.target for c in rig.store.commits] == [2, 2, 4, 3, 3, 1]


async def test_remove_below_a_target_never_goes_negative(rig: Rig) -> None:
    await rig.manager.add(3, ["a", "b", "c"])
    await rig.manager.set_target(1)
    m = await rig.manager.remove(3, [])
    assert m.replicas == () and m.target == 0


async def test_remove_all_empties_the_ring_resets_the_target_and_stops_everything(
    rig: Rig,
) -> None:
    await rig.manager.add(3, ["a", "b", "c"])
    await rig.runtime.spawn("untracked", "untracked")  # started, never recorded nor joined
    await rig.store.record_handle(ReplicaHandle("recorded-only", "x", "127.0.0.1:1"))
    await rig.manager.remove_all()
    m = await rig.membership()
    assert m.replicas == () and m.target is None
    assert await rig.running() == set()
    assert sorted(rig.runtime.stopped) == ["a", "b", "c", "untracked"]
    assert await rig.records() == {}
    assert rig.refreshes[-1] == m.epoch  # the ring was refreshed after the commit


# --- the event loop ---------------------------------------------------------------------------


async def test_the_ring_state_is_computed_off_the_event_loop(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``next_state`` costs tens of ms of CPU per change (40 ms measured on the CI machine): on
    the loop it would stall every connection this instance serves, once per commit."""
    import threading

    from balancer.control import manager as manager_module
    from balancer.hashing import next_state as real

    threads: list[threading.Thread] = []

    def recording(*args: Any) -> str:
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(manager_module, "next_state", recording)
    await rig.manager.add(2, ["a", "b"])
    await rig.manager.remove(1, ["a"])
    assert len(threads) == 2
    assert threading.main_thread() not in threads

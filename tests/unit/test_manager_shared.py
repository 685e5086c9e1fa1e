"""``ReplicaManager`` and ``Supervisor`` in shared mode: leadership, fencing, runtime records,
adoption, and the target N kept in the store.

Replicas are real aiohttp apps served from the test's loop (``InProcessRuntime``); the store is
in memory (or fakeredis, for the fencing token); leadership is a fake the test flips by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest

from balancer.backoff import Backoff
from balancer.control.manager import ReplicaManager
from balancer.control.supervisor import Supervisor
from balancer.errors import NotLeaderError, StaleLeaderError
from balancer.runtimes.base import ReplicaHandle
from balancer.state import keys
from balancer.state.coordination import SoloLeadership
from balancer.state.redis_store import RedisStore
from balancer.state.store import InMemoryStore, Membership, Replica, Store
from tests.conftest import eventually
from tests.support.runtime import InProcessRuntime


class FakeLeadership(SoloLeadership):
    """A ``Leadership`` whose standing and fencing token the test sets."""

    def __init__(self, *, is_leader: bool = True, token: int | None = 1) -> None:
        self.is_leader = is_leader
        self.token = token


@dataclass
class CommitCall:
    names: list[str]
    expected_epoch: int
    fence_token: int | None
    target: int | None


class RecordingStore(InMemoryStore):
    """An ``InMemoryStore`` that remembers every commit's arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[CommitCall] = []

    async def commit(
        self,
        replicas: Sequence[Replica],
        *,
        expected_epoch: int,
        fence_token: int | None = None,
        target: int | None = None,
        **routing: Any,
    ) -> Membership | None:
        self.commits.append(
            CommitCall([r.name for r in replicas], expected_epoch, fence_token, target)
        )
        return await super().commit(
            replicas,
            expected_epoch=expected_epoch,
            fence_token=fence_token,
            target=target,
            **routing,
        )


async def ready(address: str) -> None:
    return None


@dataclass
class Rig:
    store: RecordingStore
    runtime: InProcessRuntime
    leadership: FakeLeadership
    manager: ReplicaManager
    refreshes: list[int] = field(default_factory=list)

    async def membership(self) -> Membership:
        return await self.store.membership()

    async def records(self) -> dict[str, ReplicaHandle]:
        return {h.name: h for h in await self.store.handles()}

    async def running(self) -> set[str]:
        return {h.name for h in await self.runtime.list()}


def make_manager(
    store: Store,
    runtime: InProcessRuntime,
    leadership: FakeLeadership,
    *,
    wait_ready: Callable[[str], Awaitable[None]] = ready,
    on_change: Callable[[], Awaitable[object]] | None = None,
    max_replicas: int = 20,
) -> ReplicaManager:
    async def nothing() -> None:
        return None

    return ReplicaManager(
        store,
        runtime,
        wait_ready,
        on_change or nothing,
        max_replicas=max_replicas,
        alive_ttl_s=5.0,
        leadership=leadership,
    )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store = RecordingStore()
    runtime = InProcessRuntime()
    leadership = FakeLeadership(token=7)
    refreshes: list[int] = []

    async def on_change() -> None:
        refreshes.append((await store.membership()).epoch)

    manager = make_manager(store, runtime, leadership, on_change=on_change)
    yield Rig(store, runtime, leadership, manager, refreshes)
    await runtime.close()


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
        "adopt": lambda: rig.manager.adopt(),
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


# --- adoption -----------------------------------------------------------------------------------


async def test_adopt_keeps_members_stops_strays_and_drops_the_gone(rig: Rig) -> None:
    # A previous leader started "member" and "stray" and committed "member" and "gone", then died.
    member = await rig.runtime.spawn("member", "member")
    stray = await rig.runtime.spawn("stray", "stray")
    gone = ReplicaHandle("gone", "gone", "127.0.0.1:1", 999_999, "1")
    await rig.store.commit(
        [Replica("member", 1, member.address), Replica("gone", 2, gone.address)],
        expected_epoch=0,
        target=2,
    )
    for handle in (member, stray, gone):
        await rig.store.record_handle(handle)
    before = await rig.membership()

    assert await rig.manager.adopt() == (1, 1)

    assert await rig.running() == {"member"}
    assert rig.runtime.stopped == ["stray"]
    assert set(await rig.records()) == {"member"}
    # Adoption changes no membership: the health checks find "gone" dead and replace it.
    assert await rig.membership() == before


async def test_remove_strays_stops_running_non_members_only(rig: Rig) -> None:
    """A replica the runtime runs without a record or a ring slot (started behind our back)."""
    member = await rig.runtime.spawn("member", "member")
    await rig.runtime.spawn("behind-our-back", "behind-our-back")
    await rig.store.commit([Replica("member", 1, member.address)], expected_epoch=0, target=1)
    before = await rig.membership()

    assert await rig.manager.remove_strays() == ["behind-our-back"]

    assert await rig.running() == {"member"}
    assert await rig.membership() == before
    assert await rig.manager.remove_strays() == []


async def test_adopt_finds_a_member_whose_record_was_lost(rig: Rig) -> None:
    """After the store lost its data, a restored member still carries pid/ident to adopt by."""
    kept = await rig.runtime.spawn("kept", "kept")
    lost = await rig.runtime.spawn("lost-record", "lost-record")
    await rig.store.commit(
        [
            Replica("kept", 1, kept.address, pid=101, ident="a"),
            Replica("lost-record", 2, lost.address, pid=102, ident="b"),
        ],
        expected_epoch=0,
        target=2,
    )
    await rig.store.record_handle(kept)
    assert await rig.manager.adopt() == (2, 0)
    assert rig.runtime.stopped == []


async def test_adopt_with_nothing_recorded_does_nothing(rig: Rig) -> None:
    assert await rig.manager.adopt() == (0, 0)
    assert rig.store.commits == []


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


# --- Supervisor ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def supervising(supervisor: Supervisor) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(supervisor.run(), name="test supervisor")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def fast_supervisor(rig: Rig) -> Supervisor:
    return Supervisor(rig.manager, rig.store, Backoff(base_s=0.01, cap_s=0.05), resync_s=0.05)


async def test_a_new_leader_starts_what_its_predecessor_owed(rig: Rig) -> None:
    # The previous leader committed N=3 with one replica running, then died.
    await rig.manager.add(1, ["a"])
    await rig.manager.set_target(3)
    supervisor = fast_supervisor(rig)
    async with supervising(supervisor):  # no dead report at all
        await eventually(lambda: _count_is(rig, 3), timeout_s=5.0)
        await asyncio.sleep(0.2)  # and then it stops: nothing more is owed
        m = await rig.membership()
    assert len(m.replicas) == 3 and m.target == 3
    assert m.names[0] == "a"
    assert await rig.running() == set(m.names)
    assert set(await rig.records()) == set(m.names)
    assert all(c.target == 3 for c in rig.store.commits[2:])  # replacements keep N


async def _count_is(rig: Rig, n: int) -> bool:
    return len((await rig.membership()).replicas) == n


async def test_the_supervisor_starts_nothing_when_nothing_is_owed(rig: Rig) -> None:
    await rig.manager.add(2, ["a", "b"])
    async with supervising(fast_supervisor(rig)):
        await asyncio.sleep(0.3)
    assert sorted(rig.runtime.spawned) == ["a", "b"]
    assert (await rig.membership()).names == ["a", "b"]


async def test_the_supervisor_waits_while_the_target_is_unset(rig: Rig) -> None:
    async with supervising(fast_supervisor(rig)):
        await asyncio.sleep(0.3)
    assert rig.runtime.spawned == []
    assert await rig.membership() == Membership()


async def test_bootstrap_boots_server_1_to_n_when_no_leader_has(rig: Rig) -> None:
    await fast_supervisor(rig).bootstrap(3)
    m = await rig.membership()
    assert m.names == ["Server 1", "Server 2", "Server 3"] and m.target == 3


@pytest.mark.parametrize("target", [0, 2, 5])
async def test_bootstrap_does_nothing_once_a_target_is_set(rig: Rig, target: int) -> None:
    await rig.manager.set_target(target)
    before = await rig.membership()
    await fast_supervisor(rig).bootstrap(3)
    assert await rig.membership() == before
    assert rig.runtime.spawned == []


async def test_a_failed_bootstrap_sets_the_target_and_run_completes_it(rig: Rig) -> None:
    rig.runtime.fail_next_spawns = 1
    supervisor = fast_supervisor(rig)
    await supervisor.bootstrap(2)
    m = await rig.membership()
    assert m.replicas == () and m.target == 2
    assert await rig.running() == set()  # the one that did start was stopped again
    async with supervising(supervisor):
        await eventually(lambda: _count_is(rig, 2), timeout_s=5.0)
    m = await rig.membership()
    assert m.target == 2
    assert await rig.running() == set(m.names)


# --- DOWN but still running: the grace period (replace_after_s) --------------------------------


def graceful_supervisor(rig: Rig, running: set[str], grace_s: float) -> Supervisor:
    async def is_running(name: str) -> bool:
        return name in running

    return Supervisor(
        rig.manager,
        rig.store,
        Backoff(base_s=0.01, cap_s=0.05),
        resync_s=0.05,
        replace_after_s=grace_s,
        is_running=is_running,
    )


async def test_a_down_replica_that_recovers_within_the_grace_is_kept(rig: Rig) -> None:
    await rig.manager.add(3, ["a", "b", "c"])
    supervisor = graceful_supervisor(rig, {"a", "b", "c"}, grace_s=0.5)
    async with supervising(supervisor):
        await supervisor.on_dead("b")
        await eventually(lambda: _true("b" in supervisor.waiting), timeout_s=2.0)
        await supervisor.on_up("b")
        await asyncio.sleep(0.8)  # past the grace
        m = await rig.membership()
    assert m.names == ["a", "b", "c"]
    assert rig.runtime.stopped == []


async def test_a_down_replica_that_stays_down_is_replaced_after_the_grace(rig: Rig) -> None:
    await rig.manager.add(3, ["a", "b", "c"])
    supervisor = graceful_supervisor(rig, {"a", "b", "c"}, grace_s=0.4)
    async with supervising(supervisor):
        reported = asyncio.get_running_loop().time()
        await supervisor.on_dead("b")
        await eventually(lambda: _true("b" in rig.runtime.stopped), timeout_s=3.0)
        waited = asyncio.get_running_loop().time() - reported
        await eventually(lambda: _count_is(rig, 3), timeout_s=3.0)
        m = await rig.membership()
    assert 0.4 <= waited < 1.0, waited
    assert "b" not in m.names and len(m.names) == 3


async def test_a_down_replica_whose_process_is_gone_is_replaced_at_once(rig: Rig) -> None:
    await rig.manager.add(3, ["a", "b", "c"])
    supervisor = graceful_supervisor(rig, {"a", "c"}, grace_s=5.0)  # b is not running
    async with supervising(supervisor):
        await supervisor.on_dead("b")
        took = await eventually(lambda: _true("b" in rig.runtime.stopped), timeout_s=2.0)
    assert took < 1.0
    assert supervisor.waiting == {}


async def _true(value: bool) -> bool:
    return value

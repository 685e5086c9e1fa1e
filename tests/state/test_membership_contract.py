"""``MembershipStore`` contract: the versioned document, compare-and-set, restore and watch.

The same bodies run over memory, fakeredis and a real redis-server (``conftest.state``); each
``state.store()`` is another instance's view of the same document.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from balancer.errors import StaleLeaderError
from balancer.hashing import RingSettings
from balancer.state import keys
from balancer.state.redis_store import RedisStore
from balancer.state.store import Membership, MembershipStore
from tests.state.conftest import OUTAGES, Call, Outage, SharedState, replica, shared_only


def members(state: SharedState) -> MembershipStore:
    return state.store()


# --- compare-and-set ----------------------------------------------------------------------------


async def test_starts_empty_at_epoch_zero(state: SharedState) -> None:
    assert await members(state).membership() == Membership(0, ())


async def test_commit_with_the_right_epoch_increments_it(state: SharedState) -> None:
    store, reader = members(state), members(state)
    first = await store.commit([replica(1), replica(2)], expected_epoch=0)
    assert first is not None and first.epoch == 1 and first.names == ["S1", "S2"]
    assert await reader.membership() == first  # another instance reads the same document
    assert (await reader.membership()).replicas == (replica(1), replica(2))
    second = await store.commit([replica(1)], expected_epoch=1)
    assert second is not None and second.epoch == 2
    assert (await reader.membership()).names == ["S1"]


async def test_a_stale_epoch_is_refused_and_changes_nothing(state: SharedState) -> None:
    a, b = members(state), members(state)
    current = await a.commit([replica(1)], expected_epoch=0)
    assert current is not None
    assert await b.commit([replica(9)], expected_epoch=0) is None  # computed from epoch 0
    for stale in (2, -1):  # ahead of the document, or nonsense
        assert await b.commit([replica(9)], expected_epoch=stale) is None
    assert await a.membership() == current


async def test_duplicate_names_are_refused_and_change_nothing(state: SharedState) -> None:
    store = members(state)
    current = await store.commit([replica(1)], expected_epoch=0)
    with pytest.raises(ValueError, match="duplicate"):
        await store.commit([replica(2), replica(2)], expected_epoch=1)
    assert await members(state).membership() == current


async def test_concurrent_writers_lose_no_update(state: SharedState) -> None:
    async def add(i: int) -> None:
        store = members(state)
        while True:  # read, modify, compare-and-set: retry on a lost race
            current = await store.membership()
            if await store.commit([*current.replicas, replica(i)], expected_epoch=current.epoch):
                return

    await asyncio.wait_for(asyncio.gather(*(add(i) for i in range(1, 21))), 30)
    m = await members(state).membership()
    assert m.epoch == 20
    assert sorted(r.index for r in m.replicas) == list(range(1, 21))


# --- what a document carries --------------------------------------------------------------------


async def test_target_is_none_until_the_first_commit_sets_it(state: SharedState) -> None:
    assert (await members(state).membership()).target is None
    committed = await members(state).commit([replica(1)], expected_epoch=0)
    assert committed is not None and committed.target is None
    assert (await members(state).membership()).target is None


async def test_target_is_persisted_with_each_commit(state: SharedState) -> None:
    writer, reader = members(state), members(state)
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


async def test_a_refused_commit_leaves_the_target_alone(state: SharedState) -> None:
    a, b = members(state), members(state)
    await a.commit([replica(1)], expected_epoch=0, target=5)
    assert await b.commit([replica(9)], expected_epoch=0, target=1) is None
    assert await b.membership() == Membership(1, (replica(1),), 5)


async def test_member_locator_survives_a_commit(state: SharedState) -> None:
    listed = [replica(1, locator="4321:98765"), replica(2)]
    await members(state).commit(listed, expected_epoch=0, target=2)
    read = await members(state).membership()
    assert read.replicas == tuple(listed)
    assert read.replicas[0].locator == "4321:98765"
    assert read.replicas[1].locator == ""


async def test_routing_settings_and_ring_state_round_trip(state: SharedState) -> None:
    settings = RingSettings(algorithm="maglev", balance_factor=1.25)
    await members(state).commit(
        [replica(1)], expected_epoch=0, target=1, settings=settings, ring_state="abc:def"
    )
    read = await members(state).membership()
    assert (read.settings, read.ring_state) == (settings, "abc:def")
    assert read.settings is not None and read.settings.hash_seed == settings.hash_seed


# --- watch --------------------------------------------------------------------------------------


async def test_wait_for_change_wakes_on_a_commit_elsewhere(state: SharedState) -> None:
    watcher, writer = members(state), members(state)
    await watcher.wait_for_change(0, 0.2)  # subscribe (and settle) before measuring
    started = time.monotonic()
    waiting = asyncio.create_task(watcher.wait_for_change(0, 30.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await writer.commit([replica(1)], expected_epoch=0)
    await asyncio.wait_for(waiting, 2.0)  # far less than the waiter's own 30 s
    assert time.monotonic() - started < 1.0


async def test_wait_for_change_returns_at_once_when_already_changed(state: SharedState) -> None:
    store = members(state)
    await store.commit([replica(1)], expected_epoch=0)
    started = time.monotonic()
    await asyncio.wait_for(store.wait_for_change(0, 30.0), 2.0)
    assert time.monotonic() - started < 1.0


async def test_wait_for_change_returns_after_its_timeout(state: SharedState) -> None:
    store = members(state)
    started = time.monotonic()
    await asyncio.wait_for(store.wait_for_change(0, 0.3), 2.0)
    assert 0.25 <= time.monotonic() - started < 1.5
    # Nothing stayed locked: a commit still works and wakes the next waiter.
    waiter = asyncio.create_task(store.wait_for_change(0, 30.0))
    await asyncio.sleep(0.05)
    assert await store.commit([replica(1)], expected_epoch=0) is not None
    await asyncio.wait_for(waiter, 2.0)


# --- restore (the store lost its data) ----------------------------------------------------------


async def test_restore_writes_a_newer_membership_back_and_wakes_waiters(
    state: SharedState,
) -> None:
    store, watcher = members(state), members(state)
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


async def test_restore_only_when_the_store_is_behind(state: SharedState) -> None:
    store = members(state)
    await store.commit([replica(1)], expected_epoch=0, target=1)
    current = await store.commit([replica(1), replica(2)], expected_epoch=1, target=2)
    for epoch in (0, 1, 2):  # older, older, the same epoch: nothing written
        assert await store.restore(Membership(epoch, (replica(9),), 9)) is False
        assert await members(state).membership() == current


# --- fencing (shared backends) ------------------------------------------------------------------


@shared_only
async def test_a_stale_token_cannot_restore_nor_commit(state: SharedState) -> None:
    store = state.store()
    assert isinstance(store, RedisStore)
    await store._redis.set(keys.fence(store._prefix), 5)  # the latest leader's token
    with pytest.raises(StaleLeaderError):
        await store.restore(Membership(3, (replica(1),), 1), fence_token=4)
    assert await store.membership() == Membership()
    assert await store.restore(Membership(3, (replica(1),), 1), fence_token=5)
    with pytest.raises(StaleLeaderError):
        await store.commit([], expected_epoch=3, fence_token=4, target=None)
    assert (await store.membership()).target == 1


# --- outages ------------------------------------------------------------------------------------

CALLS: dict[str, Call] = {
    "membership": lambda s: s.membership(),
    "commit": lambda s: s.commit([replica(1)], expected_epoch=0, target=1),
    "commit fenced": lambda s: s.commit([replica(1)], expected_epoch=0, fence_token=3, target=1),
    "restore": lambda s: s.restore(Membership(4, (replica(1),), 1)),
    "wait_for_change": lambda s: s.wait_for_change(0, 0.5),
}


@pytest.mark.parametrize("how", OUTAGES)
@pytest.mark.parametrize("call", list(CALLS))
async def test_unavailable_redis_is_store_unavailable(outage: Outage, call: str, how: str) -> None:
    await outage.check(CALLS[call], how)

"""``Reconciler``: the leader's loop applies ``plan`` to real components.

Replicas are real aiohttp apps served from the test's loop (``InProcessRuntime``); the store is
in memory; the health checks' DOWN verdicts are a dict the test writes. A predecessor leader is
simulated by a second runtime whose replicas the new leader's runtime can adopt.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from balancer.backoff import Backoff
from balancer.control.plan import Policy
from balancer.control.reconciler import Reconciler
from balancer.errors import StoreUnavailable
from balancer.runtimes.base import ReplicaHandle
from balancer.state.store import Membership, Replica
from tests.conftest import eventually
from tests.support.manager_rig import FakeLeadership, RecordingStore, Rig, make_manager, rig
from tests.support.runtime import InProcessRuntime

__all__ = ["rig"]  # the fixture


class HandOverRuntime(InProcessRuntime):
    """A runtime that can adopt what ``previous`` (a dead leader's runtime) started."""

    def __init__(self, previous: InProcessRuntime) -> None:
        super().__init__()
        self.previous = previous

    async def adopt(self, handle: ReplicaHandle) -> bool:
        entry = self.previous._runners.pop(handle.name, None)
        if entry is not None:
            self._runners[handle.name] = entry
        return handle.name in self._runners


@pytest.fixture
async def handover() -> AsyncIterator[Rig]:
    """A rig whose runtime takes over from a predecessor's (``rig.runtime.previous``)."""
    store, previous = RecordingStore(), InProcessRuntime()
    runtime = HandOverRuntime(previous)
    leadership = FakeLeadership(token=7)
    yield Rig(store, runtime, leadership, make_manager(store, runtime, leadership))
    await runtime.close()
    await previous.close()


def reconciler(
    rig: Rig,
    *,
    down: dict[str, float] | None = None,
    boot: int = 3,
    grace_s: float = 0.0,
    known: Membership | None = None,
    resync_s: float = 0.05,
) -> Reconciler:
    verdicts = down if down is not None else {}
    return Reconciler(
        Policy(boot, grace_s),
        rig.manager,
        rig.store,
        rig.runtime,
        known=lambda: known or Membership(),
        down=lambda: verdicts,
        backoff=Backoff(base_s=0.01, cap_s=0.05),
        resync_s=resync_s,
    )


@contextlib.asynccontextmanager
async def running(r: Reconciler) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(r.run(), name="test reconciler")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settle(r: Reconciler, rounds: int = 5) -> int:
    """Run rounds until one does nothing; returns how many did something."""
    for acted in range(rounds):
        _, actions = await r.reconcile_once()
        if not actions:
            return acted
    pytest.fail(f"still acting after {rounds} rounds")


async def _count_is(rig: Rig, n: int) -> bool:
    return len((await rig.membership()).replicas) == n


async def _true(value: bool) -> bool:
    return value


# --- adoption and strays (a new leader's first rounds) ----------------------------------------


async def test_a_new_leader_adopts_members_stops_strays_and_forgets_the_gone(
    handover: Rig,
) -> None:
    rig = handover
    assert isinstance(rig.runtime, HandOverRuntime)
    # The previous leader started "member" and "stray", committed "member" and "gone", then died.
    member = await rig.runtime.previous.spawn("member", "member")
    stray = await rig.runtime.previous.spawn("stray", "stray")
    gone = ReplicaHandle("gone", "gone", "127.0.0.1:1")
    await rig.store.commit(
        [Replica("member", 1, member.address), Replica("gone", 2, gone.address)],
        expected_epoch=0,
        target=2,
    )
    for handle in (member, stray, gone):
        await rig.store.record_handle(handle)
    before = await rig.membership()

    assert await settle(reconciler(rig)) == 2  # adopt; then stop the adopted stray

    assert await rig.running() == {"member"}
    assert rig.runtime.stopped == ["stray"]
    assert set(await rig.records()) == {"member"}
    # Adoption changes no membership: the health checks find "gone" dead and it is replaced.
    assert await rig.membership() == before


async def test_replicas_started_behind_our_back_are_stopped_and_members_kept(rig: Rig) -> None:
    member = await rig.runtime.spawn("member", "member")
    await rig.runtime.spawn("behind-our-back", "behind-our-back")
    await rig.store.commit([Replica("member", 1, member.address)], expected_epoch=0, target=1)
    before = await rig.membership()

    assert await settle(reconciler(rig)) == 1

    assert await rig.running() == {"member"}
    assert rig.runtime.stopped == ["behind-our-back"]
    assert await rig.membership() == before


async def test_a_member_whose_record_was_lost_is_adopted_by_what_it_carries(
    handover: Rig,
) -> None:
    """After the store lost its data, a restored member still carries its runtime's locator."""
    rig = handover
    assert isinstance(rig.runtime, HandOverRuntime)
    kept = await rig.runtime.previous.spawn("kept", "kept")
    lost = await rig.runtime.previous.spawn("lost-record", "lost-record")
    await rig.store.commit(
        [
            Replica("kept", 1, kept.address, locator=kept.locator),
            Replica("lost-record", 2, lost.address, locator=lost.locator),
        ],
        expected_epoch=0,
        target=2,
    )
    await rig.store.record_handle(kept)
    await settle(reconciler(rig))
    assert await rig.running() == {"kept", "lost-record"}
    assert rig.runtime.stopped == []


async def test_nothing_recorded_and_nothing_owed_does_nothing(rig: Rig) -> None:
    await rig.manager.set_target(0)
    commits = len(rig.store.commits)
    assert await settle(reconciler(rig)) == 0
    assert len(rig.store.commits) == commits
    assert rig.runtime.spawned == []


# --- restore after the store lost its data -----------------------------------------------------


async def test_a_store_that_lost_its_data_gets_the_routed_ring_back_with_its_records(
    rig: Rig,
) -> None:
    added = await rig.manager.add(2, ["a", "b"])
    known = added
    rig.store._membership = Membership()  # the store restarted empty
    rig.store._handles.clear()

    _, actions = await reconciler(rig, known=known).reconcile_once()

    restored = await rig.membership()
    assert [type(a).__name__ for a in actions] == ["Restore"]
    assert restored.names == ["a", "b"] and restored.epoch == known.epoch + 1
    assert set(await rig.records()) == {"a", "b"}
    assert rig.runtime.spawned == ["a", "b"]  # nothing booted over it


# --- target N ----------------------------------------------------------------------------------


async def test_a_new_leader_starts_what_its_predecessor_owed(rig: Rig) -> None:
    # The previous leader committed N=3 with one replica running, then died.
    await rig.manager.add(1, ["a"])
    await rig.manager.set_target(3)
    async with running(reconciler(rig)):  # no failure reported at all
        await eventually(lambda: _count_is(rig, 3), timeout_s=5.0)
        await asyncio.sleep(0.2)  # and then it stops: nothing more is owed
        m = await rig.membership()
    assert len(m.replicas) == 3 and m.target == 3
    assert m.names[0] == "a"
    assert await rig.running() == set(m.names)
    assert set(await rig.records()) == set(m.names)
    assert all(c.target == 3 for c in rig.store.commits[2:])  # replacements keep N


async def test_nothing_owed_starts_nothing(rig: Rig) -> None:
    await rig.manager.add(2, ["a", "b"])
    async with running(reconciler(rig)):
        await asyncio.sleep(0.3)
    assert sorted(rig.runtime.spawned) == ["a", "b"]
    assert (await rig.membership()).names == ["a", "b"]


async def test_the_first_leader_ever_boots_server_1_to_n(rig: Rig) -> None:
    r = reconciler(rig, boot=3)
    await settle(r)
    m = await rig.membership()
    assert m.names == ["Server 1", "Server 2", "Server 3"] and m.target == 3
    assert r.ready.is_set()


@pytest.mark.parametrize("target", [0, 2, 5])
async def test_a_target_once_set_is_never_booted_again(rig: Rig, target: int) -> None:
    await rig.manager.set_target(target)
    await settle(reconciler(rig, boot=3), rounds=8)
    m = await rig.membership()
    assert len(m.replicas) == target
    assert not {"Server 1", "Server 2", "Server 3"} & set(rig.runtime.spawned)


async def test_a_failed_boot_sets_the_target_and_later_rounds_complete_it(rig: Rig) -> None:
    rig.runtime.fail_next_spawns = 1
    r = reconciler(rig, boot=2)
    await r.reconcile_once()
    m = await rig.membership()
    assert m.replicas == () and m.target == 2
    assert await rig.running() == set()  # the one that did start was stopped again
    assert r.ready.is_set()  # the balancer listens (503) while the replicas come
    async with running(r):
        await eventually(lambda: _count_is(rig, 2), timeout_s=5.0)
    m = await rig.membership()
    assert m.target == 2
    assert await rig.running() == set(m.names)


# --- failures, and the grace period (replace_after_s) --------------------------------------------


async def test_a_down_member_is_evicted_and_replaced_as_soon_as_the_loop_is_woken(
    rig: Rig,
) -> None:
    await rig.manager.add(3, ["a", "b", "c"])
    down: dict[str, float] = {}
    r = reconciler(rig, down=down, resync_s=30.0)  # only a wake-up can make it act soon
    async with running(r):
        await asyncio.sleep(0.1)
        reported = time.monotonic()
        down["b"] = reported
        r.wake()
        took = await eventually(lambda: _count_is_without(rig, "b", 3), timeout_s=3.0)
    assert rig.runtime.stopped == ["b"]
    assert time.monotonic() - reported < 1.0, took


async def _count_is_without(rig: Rig, name: str, n: int) -> bool:
    m = await rig.membership()
    return name not in m.names and len(m.replicas) == n


async def test_a_down_replica_that_recovers_within_the_grace_is_kept(rig: Rig) -> None:
    await rig.manager.add(3, ["a", "b", "c"])
    down = {"b": time.monotonic()}
    async with running(reconciler(rig, down=down, grace_s=0.5)):
        await asyncio.sleep(0.2)
        del down["b"]  # rise passed probes: UP again
        await asyncio.sleep(0.8)  # past the grace
    assert (await rig.membership()).names == ["a", "b", "c"]
    assert rig.runtime.stopped == []


async def test_a_down_replica_that_stays_down_is_replaced_after_the_grace(rig: Rig) -> None:
    await rig.manager.add(3, ["a", "b", "c"])
    reported = time.monotonic()
    async with running(reconciler(rig, down={"b": reported}, grace_s=0.4)):
        await eventually(lambda: _true("b" in rig.runtime.stopped), timeout_s=3.0)
        waited = time.monotonic() - reported
        await eventually(lambda: _count_is(rig, 3), timeout_s=3.0)
    m = await rig.membership()
    assert 0.4 <= waited < 1.0, waited
    assert "b" not in m.names and len(m.names) == 3


async def test_a_down_replica_whose_process_is_gone_is_replaced_at_once(rig: Rig) -> None:
    await rig.manager.add(3, ["a", "b", "c"])
    await rig.runtime.crash("b")
    async with running(reconciler(rig, down={"b": time.monotonic()}, grace_s=5.0)):
        took = await eventually(lambda: _count_is_without(rig, "b", 3), timeout_s=2.0)
    assert took < 1.0


async def test_a_round_that_fails_is_retried_and_then_converges(rig: Rig) -> None:
    await rig.manager.add(1, ["a"])
    await rig.manager.set_target(2)
    failures = 2
    original = rig.store.handles

    async def flaky() -> list[ReplicaHandle]:
        nonlocal failures
        if failures > 0:
            failures -= 1
            raise StoreUnavailable("injected outage")
        return await original()

    rig.store.handles = flaky  # type: ignore[method-assign]
    async with running(reconciler(rig)):
        await eventually(lambda: _count_is(rig, 2), timeout_s=5.0)
    assert failures == 0

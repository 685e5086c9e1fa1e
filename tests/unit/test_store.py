"""``InMemoryStore``, ``Membership`` and ``Backoff``."""

from __future__ import annotations

import asyncio
import random

import pytest

from balancer.backoff import Backoff
from balancer.hashing import Member
from balancer.runtimes.base import ReplicaHandle
from balancer.state.memory import InMemoryStore
from balancer.state.store import Membership, Replica


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def replicas(*names: str) -> list[Replica]:
    return [Replica(n, i, f"127.0.0.1:{9000 + i}") for i, n in enumerate(names, start=1)]


# --- membership commits -----------------------------------------------------------------------


async def test_starts_empty_at_epoch_zero() -> None:
    assert await InMemoryStore().membership() == Membership(0, ())


async def test_commit_with_the_right_epoch_increments_it() -> None:
    store = InMemoryStore()
    first = await store.commit(replicas("a", "b"), expected_epoch=0)
    assert first is not None
    assert first.epoch == 1
    assert first.names == ["a", "b"]
    assert await store.membership() == first
    second = await store.commit(replicas("a"), expected_epoch=1)
    assert second is not None
    assert second.epoch == 2
    assert (await store.membership()).names == ["a"]


async def test_stale_commit_returns_none_and_changes_nothing() -> None:
    store = InMemoryStore()
    current = await store.commit(replicas("a", "b"), expected_epoch=0)
    for stale in (0, 2, -1):
        assert await store.commit(replicas("x"), expected_epoch=stale) is None
        assert await store.membership() == current


async def test_duplicate_names_are_refused_and_change_nothing() -> None:
    store = InMemoryStore()
    current = await store.commit(replicas("a"), expected_epoch=0)
    with pytest.raises(ValueError, match="duplicate"):
        await store.commit([*replicas("b"), *replicas("b")], expected_epoch=1)
    assert await store.membership() == current


async def test_wait_for_change_wakes_on_commit() -> None:
    store = InMemoryStore()
    waiter = asyncio.create_task(store.wait_for_change(0, timeout_s=30))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await store.commit(replicas("a"), expected_epoch=0)
    await asyncio.wait_for(waiter, timeout=2)  # far less than the waiter's own 30 s


async def test_wait_for_change_returns_at_once_when_already_changed() -> None:
    store = InMemoryStore()
    await store.commit(replicas("a"), expected_epoch=0)
    await asyncio.wait_for(store.wait_for_change(0, timeout_s=30), timeout=2)


async def test_wait_for_change_returns_on_timeout() -> None:
    store = InMemoryStore()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(store.wait_for_change(0, timeout_s=0.05), timeout=2)
    elapsed = loop.time() - started
    assert 0.04 <= elapsed < 1.0, elapsed
    # The condition's lock was released: a commit still works and wakes the next waiter.
    waiter = asyncio.create_task(store.wait_for_change(0, timeout_s=30))
    await asyncio.sleep(0)
    assert await store.commit(replicas("a"), expected_epoch=0) is not None
    await asyncio.wait_for(waiter, timeout=2)


# --- liveness -----------------------------------------------------------------------------------


async def test_mark_alive_honours_the_ttl() -> None:
    clock = FakeClock(100.0)
    store = InMemoryStore(clock=clock)
    assert await store.alive() == frozenset()
    await store.mark_alive("a", ttl_s=5.0)
    await store.mark_alive("b", ttl_s=1.0)
    assert await store.alive() == {"a", "b"}
    clock.now = 100.999
    assert await store.alive() == {"a", "b"}
    clock.now = 101.0  # b's TTL is over exactly now
    assert await store.alive() == {"a"}
    clock.now = 104.9
    assert await store.alive() == {"a"}
    clock.now = 105.0
    assert await store.alive() == frozenset()


async def test_mark_alive_again_extends_the_ttl() -> None:
    clock = FakeClock(0.0)
    store = InMemoryStore(clock=clock)
    await store.mark_alive("a", ttl_s=2.0)
    clock.now = 1.5
    await store.mark_alive("a", ttl_s=2.0)
    clock.now = 3.0
    assert await store.alive() == {"a"}
    clock.now = 3.5
    assert await store.alive() == frozenset()


async def test_mark_dead_removes_at_once() -> None:
    clock = FakeClock()
    store = InMemoryStore(clock=clock)
    await store.mark_alive("a", ttl_s=60)
    await store.mark_alive("b", ttl_s=60)
    await store.mark_dead("a")
    assert await store.alive() == {"b"}
    await store.mark_dead("never-seen")  # not an error
    assert await store.alive() == {"b"}


# --- Membership / Replica -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("indexes", "free"),
    [((), 1), ((1, 2, 3), 4), ((2, 3), 1), ((1, 3), 2), ((3, 1, 2, 5), 4), ((7,), 1), ((1, 1), 2)],
)
def test_free_index_is_the_smallest_unused_positive_int(
    indexes: tuple[int, ...], free: int
) -> None:
    members = tuple(Replica(f"r{n}", i, "h:1") for n, i in enumerate(indexes))
    assert Membership(3, members).free_index() == free


def test_membership_lookups() -> None:
    m = Membership(1, tuple(replicas("a", "b")))
    assert m.names == ["a", "b"]
    assert m.get("b") == Replica("b", 2, "127.0.0.1:9002")
    assert m.get("zz") is None
    assert Replica("a", 4, "h:1", weight=2).member() == Member("a", 4, 2)


# --- backoff ------------------------------------------------------------------------------------


@pytest.mark.parametrize("failures", [0, 1, 2, 3, 5, 6, 10, 30, 31, 1000])
def test_backoff_within_bounds(failures: int) -> None:
    backoff = Backoff(base_s=0.1, cap_s=5.0, rng=random.Random(failures))
    ceiling = min(5.0, 0.1 * 2**failures)
    samples = [backoff.compute(failures) for _ in range(500)]
    assert all(0.0 <= s <= ceiling for s in samples)
    # Full jitter: the delays spread over the whole range, not a point.
    assert max(samples) > 0.9 * ceiling
    assert min(samples) < 0.1 * ceiling


class CeilingRng(random.Random):
    """Returns the top of the requested range, so ``compute`` shows its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        assert a == 0.0
        return b


@pytest.mark.parametrize(
    ("failures", "ceiling"), [(0, 0.1), (1, 0.2), (3, 0.8), (5, 3.2), (6, 5.0), (10**6, 5.0)]
)
def test_backoff_ceiling(failures: int, ceiling: float) -> None:
    assert Backoff(0.1, 5.0, CeilingRng()).compute(failures) == pytest.approx(ceiling)


def test_backoff_is_deterministic_with_a_seeded_rng() -> None:
    a = Backoff(rng=random.Random(7))
    b = Backoff(rng=random.Random(7))
    assert [a.compute(n) for n in range(10)] == [b.compute(n) for n in range(10)]


# --- instance registry and runtime records ------------------------------------------------------


async def test_announcements_honour_the_ttl_on_the_stores_clock() -> None:
    clock = FakeClock(50.0)
    store = InMemoryStore(clock=clock)
    await store.announce("a", {"role": "leader"}, ttl_s=2.0)
    await store.announce("b", {"role": "follower"}, ttl_s=0.5)
    assert await store.instances() == {"a": {"role": "leader"}, "b": {"role": "follower"}}
    clock.now = 50.499
    assert set(await store.instances()) == {"a", "b"}
    clock.now = 50.5  # b's TTL is over exactly now
    assert await store.instances() == {"a": {"role": "leader"}}
    await store.announce("b", {"role": "follower", "round": 2}, ttl_s=1.6)  # back, till 52.1
    clock.now = 51.999
    assert set(await store.instances()) == {"a", "b"}
    clock.now = 52.0
    assert await store.instances() == {"b": {"role": "follower", "round": 2}}
    clock.now = 52.1
    assert await store.instances() == {}


async def test_withdraw_removes_an_instance_at_once() -> None:
    clock = FakeClock()
    store = InMemoryStore(clock=clock)
    await store.announce("a", {}, ttl_s=60)
    await store.announce("b", {}, ttl_s=60)
    await store.withdraw("a")
    await store.withdraw("never-announced")
    assert await store.instances() == {"b": {}}


async def test_records_and_target_are_independent_of_liveness() -> None:
    clock = FakeClock()
    store = InMemoryStore(clock=clock)
    handle = ReplicaHandle("a", "a", "127.0.0.1:1", "42:7")
    await store.record_handle(handle)
    await store.mark_alive("a", ttl_s=1.0)
    m = await store.commit(replicas("a"), expected_epoch=0, target=4)
    assert m is not None and m.target == 4
    clock.now += 10  # liveness ran out; the record and N did not
    assert await store.alive() == frozenset()
    assert await store.handles() == [handle]
    assert (await store.membership()).target == 4
    await store.drop_handle("a")
    assert await store.handles() == []

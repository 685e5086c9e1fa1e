"""``InMemoryStore`` on an injected clock: its TTLs end exactly when they should.

The contract suites run the in-memory store on real time next to Redis; these pin the exact
boundaries, which only an injected clock can.
"""

from __future__ import annotations

from balancer.state.memory import InMemoryStore
from tests.state.conftest import handle, replica


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


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
    record = handle("a", "127.0.0.1:1", "42:7")
    await store.record_handle(record)
    await store.mark_alive("a", ttl_s=1.0)
    m = await store.commit([replica(1)], expected_epoch=0, target=4)
    assert m is not None and m.target == 4
    clock.now += 10  # liveness ran out; the record and N did not
    assert await store.alive() == frozenset()
    assert await store.handles() == [record]
    assert (await store.membership()).target == 4
    await store.drop_handle("a")
    assert await store.handles() == []

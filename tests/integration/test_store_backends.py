"""The same store tests against every Store: in memory, fakeredis, and a real redis-server.

The real server is ``LB_TEST_REDIS_URL``, else one the session starts from the redis-server
binary; those cases skip with a reason when neither exists (CI installs redis-server, so they
run there). Each test uses its own key prefix, removed afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from balancer.state.memory import InMemoryStore
from balancer.state.redis_store import RedisStore
from balancer.state.store import Replica, Store
from tests.support.shared_redis import shared_redis

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["memory", "fakeredis", "redis"])
async def make_store(
    request: pytest.FixtureRequest, redis_url: str | None
) -> AsyncIterator[StoreFactory]:
    """A factory: every call is another instance's view of the same shared state."""
    if request.param == "memory":
        shared = InMemoryStore()
        yield lambda: shared
        return
    made: list[RedisStore] = []
    async with shared_redis(request.param, redis_url, socket_timeout_s=2.0) as redis_:

        def factory() -> Store:
            made.append(RedisStore(redis_.client(), prefix=redis_.prefix))
            return made[-1]

        yield factory
        for store in made:
            await store.close()


def replica(i: int) -> Replica:
    return Replica(f"S{i}", i, f"127.0.0.1:{9000 + i}", 1)


async def test_empty_membership(make_store: StoreFactory) -> None:
    m = await make_store().membership()
    assert m.epoch == 0 and m.replicas == ()


async def test_commit_round_trip_and_epoch(make_store: StoreFactory) -> None:
    store = make_store()
    committed = await store.commit([replica(1), replica(2)], expected_epoch=0)
    assert committed is not None and committed.epoch == 1
    again = await make_store().membership()  # another instance reads the same document
    assert again == committed
    assert again.replicas == (replica(1), replica(2))


async def test_stale_commit_is_refused_and_changes_nothing(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    assert await a.commit([replica(1)], expected_epoch=0) is not None
    assert await b.commit([replica(9)], expected_epoch=0) is None  # computed from epoch 0
    m = await b.membership()
    assert m.epoch == 1 and m.replicas == (replica(1),)


async def test_concurrent_writers_lose_no_update(make_store: StoreFactory) -> None:
    async def add(i: int) -> None:
        store = make_store()
        while True:  # read, modify, compare-and-set: retry on a lost race
            current = await store.membership()
            if await store.commit([*current.replicas, replica(i)], expected_epoch=current.epoch):
                return

    await asyncio.wait_for(asyncio.gather(*(add(i) for i in range(1, 21))), 30)
    m = await make_store().membership()
    assert m.epoch == 20
    assert sorted(r.index for r in m.replicas) == list(range(1, 21))


async def test_wait_for_change_wakes_on_a_commit_elsewhere(make_store: StoreFactory) -> None:
    watcher, writer = make_store(), make_store()
    await watcher.wait_for_change(0, 0.2)  # subscribe (and settle) before measuring
    started = time.monotonic()
    waiting = asyncio.create_task(watcher.wait_for_change(0, 5.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await writer.commit([replica(1)], expected_epoch=0)
    await asyncio.wait_for(waiting, 2.0)
    assert time.monotonic() - started < 1.0


async def test_wait_for_change_returns_at_once_when_already_changed(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    await store.commit([replica(1)], expected_epoch=0)
    started = time.monotonic()
    await store.wait_for_change(0, 5.0)
    assert time.monotonic() - started < 1.0


async def test_wait_for_change_times_out(make_store: StoreFactory) -> None:
    store = make_store()
    started = time.monotonic()
    await store.wait_for_change(0, 0.3)
    assert 0.25 <= time.monotonic() - started < 2.0


async def test_liveness_is_a_ttl(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    await a.mark_alive("S1", 0.3)
    await a.mark_alive("S2", 5.0)
    assert await b.alive() == {"S1", "S2"}
    await asyncio.sleep(0.5)
    assert await b.alive() == {"S2"}
    await b.mark_dead("S2")
    assert await a.alive() == frozenset()

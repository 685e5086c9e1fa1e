"""Backend factories: the store, leadership and relay each returns work together, and close.

The leadership a factory returns fences the store it returns; its relay reaches the leader its
leadership elects. Run over every backend the factories make (``conftest.state``); what only a
shared backend does (elections, fencing, relaying) over fakeredis and a real redis-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from balancer.errors import NotLeaderError, StaleLeaderError
from balancer.state import keys
from balancer.state.backends import StateBackend, memory_backend
from balancer.state.coordination import AdminReply, Leadership
from balancer.state.redis_store import RedisStore
from tests.state.conftest import LEADER_TTL_S, SharedState, replica, shared_only


@contextlib.asynccontextmanager
async def campaigning(*backends: StateBackend) -> AsyncIterator[None]:
    distinct = {id(b): b for b in backends}.values()  # memory: every instance is the one set
    tasks = [asyncio.create_task(b.leadership.run()) for b in distinct]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=3.0)


async def leader_of(*backends: StateBackend, timeout_s: float = 3.0) -> StateBackend:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        leaders = {id(b): b for b in backends if b.leadership.is_leader}  # memory: one set
        if leaders:
            assert len(leaders) == 1
            return next(iter(leaders.values()))
        await asyncio.sleep(0.01)
    pytest.fail("no leader elected")


async def test_the_leader_commits_with_its_token(state: SharedState) -> None:
    backends = [state.backend("a"), state.backend("b")]
    async with campaigning(*backends):
        leader = await leader_of(*backends)
        await leader.leadership.wait_elected()
        token = leader.leadership.token
        assert (token is not None) == state.shared  # a single instance writes unfenced
        assert leader.shared == state.shared  # the service leaves replicas to the others
        committed = await leader.store.commit([replica(1)], expected_epoch=0, fence_token=token)
        assert committed is not None and committed.epoch == 1
        assert await backends[-1].store.membership() == committed


@shared_only
async def test_the_factorys_leadership_fences_the_factorys_store(state: SharedState) -> None:
    a, thief = state.backend("a"), state.backend("thief")
    async with campaigning(a):
        await leader_of(a)
        old_token = a.leadership.token
        assert old_token is not None
        # Someone else takes the lease behind a's back (as after a long stall of a).
        store = a.store
        assert isinstance(store, RedisStore)
        await store._redis.delete(keys.leader(store._prefix))
        async with campaigning(thief):
            await asyncio.sleep(LEADER_TTL_S)  # a's next renewal is refused
            assert not a.leadership.is_leader and thief.leadership.is_leader
            for writer in (a.store, thief.store):  # refused whichever instance writes it
                with pytest.raises(StaleLeaderError):
                    await writer.commit([replica(1)], expected_epoch=0, fence_token=old_token)
                with pytest.raises(StaleLeaderError):
                    await writer.restore(await writer.membership(), fence_token=old_token)
            assert await thief.store.commit(
                [replica(1)], expected_epoch=0, fence_token=thief.leadership.token
            )


@shared_only
async def test_the_relay_reaches_the_leader_the_leadership_elects(state: SharedState) -> None:
    a, b = state.backend("a"), state.backend("b")
    seen: list[tuple[str, dict[str, Any]]] = []

    async def apply(op: str, args: dict[str, Any]) -> AdminReply:
        seen.append((op, args))
        return AdminReply(200, b'{"message": "ok"}')

    async with campaigning(a, b):
        leader = await leader_of(a, b)
        follower = b if leader is a else a
        serving = asyncio.create_task(leader.relay.serve(apply))
        try:
            reply = await asyncio.wait_for(follower.relay.forward("add", {"n": 2}), 5.0)
        finally:
            serving.cancel()
            await asyncio.wait({serving}, timeout=3.0)
    assert reply == AdminReply(200, b'{"message": "ok"}')
    assert seen == [("add", {"n": 2})]


async def test_memory_backend_is_one_unfenced_leader_with_nothing_to_relay() -> None:
    async with memory_backend() as backend:
        leadership: Leadership = backend.leadership
        assert leadership.is_leader and leadership.token is None
        await asyncio.wait_for(leadership.wait_elected(), 1.0)
        await asyncio.wait_for(leadership.wait_campaigned(), 1.0)
        with pytest.raises(NotLeaderError):
            await backend.relay.forward("add", {"n": 1})
        assert await backend.store.commit([replica(1)], expected_epoch=0, fence_token=7)


async def test_memory_backend_expires_on_the_injected_clock() -> None:
    now = [100.0]
    backend = memory_backend(clock=lambda: now[0])
    await backend.store.mark_alive("S1", 1.0)
    await backend.store.announce("i", {}, 1.0)
    now[0] = 101.0
    assert await backend.store.alive() == frozenset()
    assert await backend.store.instances() == {}


def listeners() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "redis change listener"]


async def test_closing_a_backend_stops_its_change_listener(state: SharedState) -> None:
    backend = state.backend("a")
    await backend.store.wait_for_change(0, 0.05)  # starts the Redis store's listener
    assert len(listeners()) == (1 if state.shared else 0)
    await backend.aclose()
    await asyncio.sleep(0)
    assert not [t for t in listeners() if not t.done()]
    state.made.remove(backend)  # closed here, not again by the fixture


async def test_aclose_runs_every_closer_last_first_and_reports_failures() -> None:
    ran: list[str] = []

    def closer(name: str, fail: bool = False) -> Any:
        async def close() -> None:
            ran.append(name)
            if fail:
                raise OSError(f"{name} failed")

        return close

    base = memory_backend()
    backend = StateBackend(
        base.store,
        base.leadership,
        base.relay,
        (closer("store"), closer("elector", fail=True), closer("relay")),
    )
    with pytest.raises(ExceptionGroup) as caught:
        async with backend:
            pass
    assert ran == ["relay", "elector", "store"]  # the failure stopped nothing
    assert [str(e) for e in caught.value.exceptions] == ["elector failed"]

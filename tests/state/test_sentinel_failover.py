"""Every piece of the Sentinel backend follows a real failover (``SENTINEL FAILOVER``).

A master, its replica and a Sentinel; two instances' backends made by ``sentinel_backend``.
After the Sentinel promotes the replica (and demotes the old master, dropping its clients), the
store writes to the new master, the change listener hears the new master's hints, the relay's
``BLPOP`` takes requests there, and a leader holds a token strictly greater than before (minted
on the new server, so at least ``FENCE_JUMP`` greater). Also a SIGKILLed master: the pieces
rediscover the promoted replica once the Sentinel agrees it is down.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from balancer.errors import StoreUnavailable
from balancer.state.backends import StateBackend
from balancer.state.coordination import AdminReply
from balancer.state.redis_leadership import FENCE_JUMP
from balancer.state.sentinel import sentinel_backend
from tests.state.conftest import replica
from tests.state.test_backends import campaigning
from tests.support.sentinel import MASTER_NAME, SentinelGroup, sentinel_binary

pytestmark = pytest.mark.skipif(
    sentinel_binary() is None, reason="needs redis-sentinel (Debian package redis-sentinel)"
)

TTL_S = 0.9


@pytest.fixture
async def group(tmp_path: Path) -> AsyncIterator[SentinelGroup]:
    made = await asyncio.to_thread(SentinelGroup, tmp_path, replicas=1, sentinels=1)
    try:
        yield made
    finally:
        await asyncio.to_thread(made.stop)


def backend(group: SentinelGroup, instance_id: str) -> StateBackend:
    return sentinel_backend(
        group.addresses,
        master_name=MASTER_NAME,
        instance_id=instance_id,
        leader_ttl_s=TTL_S,
        timeout_s=0.5,
        answer_timeout_s=2.0,
    )


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float) -> tuple[Any, float]:
    """Poll ``check`` (a StoreUnavailable counts as not yet) until it returns a truthy value."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if found := await check():
                return found, time.monotonic() - started
        except StoreUnavailable:
            pass
        await asyncio.sleep(0.02)
    pytest.fail(f"not reached within {timeout_s}s")


async def new_leader(backends: list[StateBackend], above: int) -> StateBackend | None:
    for b in backends:
        token = b.leadership.token
        if b.leadership.is_leader and token is not None and token > above:
            return b
    return None


async def follows(group: SentinelGroup, failover: Callable[[], None], label: str) -> None:
    a, b = backend(group, "a"), backend(group, "b")
    try:
        async with campaigning(a, b):
            first, _ = await until(lambda: new_leader([a, b], 0), 10.0)
            t1 = first.leadership.token
            assert await first.store.commit([replica(1)], expected_epoch=0, fence_token=t1)
            for x in (a, b):
                await x.store.wait_for_change(1, 0.05)  # the change listeners run
            old = group.master.port
            started = time.monotonic()
            await asyncio.to_thread(failover)
            await until(lambda: asyncio.to_thread(group.moved_from, old), 15.0)
            leader, _ = await until(lambda: new_leader([a, b], t1), 15.0)
            took = time.monotonic() - started
            t2 = leader.leadership.token
            assert t2 >= t1 + FENCE_JUMP  # minted on the promoted server
            assert (await leader.store.membership()).epoch == 1
            assert await leader.store.commit([replica(2)], expected_epoch=1, fence_token=t2)
            await hears_changes(leader, a if leader is b else b)
            await relays(leader, a if leader is b else b)
        print(f"\n[{label}] a leader with token {t2} (was {t1}) {took:.2f}s after the failover")
    finally:
        await a.aclose()
        await b.aclose()


async def hears_changes(leader: StateBackend, follower: StateBackend) -> None:
    """The follower's listener is subscribed on the new master: a commit wakes it at once."""
    waiting = asyncio.create_task(follower.store.wait_for_change(2, 10.0))
    await asyncio.sleep(0.6)  # the listener notices a moved master within its 0.5 s poll
    started = time.monotonic()
    token = leader.leadership.token
    assert await leader.store.commit([replica(3)], expected_epoch=2, fence_token=token)
    await asyncio.wait_for(waiting, 10.0)
    assert time.monotonic() - started < 2.0, "the change was not heard on the new master"


async def relays(leader: StateBackend, follower: StateBackend) -> None:
    async def apply(op: str, args: dict[str, Any]) -> AdminReply:
        return AdminReply(200, f'{{"op": "{op}"}}'.encode())

    serving = asyncio.create_task(leader.relay.serve(apply))
    try:
        reply = await asyncio.wait_for(follower.relay.forward("add", {"n": 1}), 10.0)
    finally:
        serving.cancel()
        await asyncio.wait({serving}, timeout=3.0)
    assert reply == AdminReply(200, b'{"op": "add"}')


async def test_every_piece_follows_a_sentinel_failover(group: SentinelGroup) -> None:
    await follows(group, group.force_failover, "SENTINEL FAILOVER")


async def test_every_piece_follows_when_the_master_is_killed(group: SentinelGroup) -> None:
    await follows(group, lambda: group.master.stop(signal.SIGKILL), "SIGKILL of the master")

"""``LivenessStore`` contract: a replica is alive for the TTL of its last passed heartbeat.

The same bodies run over memory, fakeredis and a real redis-server (``conftest.state``), on real
time; the in-memory store's exact boundaries on an injected clock are in ``test_memory.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from balancer.state.store import LivenessStore
from tests.state.conftest import OUTAGES, Call, Outage, SharedState


def liveness(state: SharedState) -> LivenessStore:
    return state.store()


async def test_liveness_expires_after_its_ttl(state: SharedState) -> None:
    a, b = liveness(state), liveness(state)
    assert await b.alive() == frozenset()
    await a.mark_alive("S1", 0.3)
    await a.mark_alive("S2", 5.0)
    assert await b.alive() == {"S1", "S2"}  # every instance sees it
    await asyncio.sleep(0.5)
    assert await b.alive() == {"S2"}


async def test_marking_alive_again_extends_the_ttl(state: SharedState) -> None:
    store = liveness(state)
    await store.mark_alive("S1", 0.5)
    await asyncio.sleep(0.3)
    await store.mark_alive("S1", 0.5)  # renewed before it ran out
    await asyncio.sleep(0.3)  # 0.6 s after the first mark, 0.3 s after the second
    assert await liveness(state).alive() == {"S1"}
    await asyncio.sleep(0.35)
    assert await liveness(state).alive() == frozenset()


async def test_mark_dead_drops_liveness_at_once(state: SharedState) -> None:
    a, b = liveness(state), liveness(state)
    await a.mark_alive("S1", 60.0)
    await a.mark_alive("S2", 60.0)
    await b.mark_dead("S1")
    assert await a.alive() == {"S2"}
    await b.mark_dead("never-seen")  # not an error
    assert await a.alive() == {"S2"}
    await b.mark_dead("S2")
    assert await a.alive() == frozenset()


async def test_names_are_kept_exactly(state: SharedState) -> None:
    store = liveness(state)
    names = {"Server 1", "Server é", "web-3", "a:b*c?"}  # spaces, non-ASCII, glob characters
    for name in names:
        await store.mark_alive(name, 5.0)
    assert await liveness(state).alive() == names


CALLS: dict[str, Call] = {
    "mark_alive": lambda s: s.mark_alive("S1", 1.0),
    "mark_dead": lambda s: s.mark_dead("S1"),
    "alive": lambda s: s.alive(),
}


@pytest.mark.parametrize("how", OUTAGES)
@pytest.mark.parametrize("call", list(CALLS))
async def test_unavailable_redis_is_store_unavailable(outage: Outage, call: str, how: str) -> None:
    await outage.check(CALLS[call], how)

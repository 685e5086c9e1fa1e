"""``InstanceRegistry`` contract: every instance's status, expiring unless announced again.

The same bodies run over memory, fakeredis and a real redis-server (``conftest.state``), on real
time; the in-memory store's exact boundaries on an injected clock are in ``test_memory.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from balancer.state.store import InstanceRegistry
from tests.state.conftest import OUTAGES, Call, Outage, SharedState


def registry(state: SharedState) -> InstanceRegistry:
    return state.store()


async def test_announcements_are_visible_to_every_instance(state: SharedState) -> None:
    a, b = registry(state), registry(state)
    assert await b.instances() == {}
    info_a = {"role": "leader", "epoch": 3, "names": ["Server 1", "Server é"], "nested": {"x": 1}}
    await a.announce("inst-a", info_a, 5.0)
    await b.announce("inst-b", {"role": "follower"}, 5.0)
    assert await b.instances() == {"inst-a": info_a, "inst-b": {"role": "follower"}}
    # Announcing again replaces the status; withdrawing removes only that instance.
    await a.announce("inst-a", {"role": "follower"}, 5.0)
    await a.withdraw("inst-b")
    await a.withdraw("never-announced")  # not an error
    assert await registry(state).instances() == {"inst-a": {"role": "follower"}}


async def test_the_registry_keeps_a_copy_not_the_callers_dict(state: SharedState) -> None:
    store = registry(state)
    info: dict[str, object] = {"epoch": 1}
    await store.announce("a", info, 5.0)
    info["epoch"] = 2  # the caller reuses its dict for the next round
    assert await store.instances() == {"a": {"epoch": 1}}


async def test_an_announcement_expires_after_its_ttl(state: SharedState) -> None:
    a, b = registry(state), registry(state)
    await a.announce("short", {"n": 1}, 0.2)
    await a.announce("long", {"n": 2}, 5.0)
    assert set(await b.instances()) == {"short", "long"}
    await asyncio.sleep(0.35)
    assert await b.instances() == {"long": {"n": 2}}


async def test_announcing_again_extends_the_ttl(state: SharedState) -> None:
    store = registry(state)
    await store.announce("a", {"round": 1}, 0.5)
    await asyncio.sleep(0.3)
    await store.announce("a", {"round": 2}, 0.5)  # refreshed before it ran out
    await asyncio.sleep(0.3)  # 0.6 s after the first announcement, 0.3 s after the second
    assert await registry(state).instances() == {"a": {"round": 2}}
    await asyncio.sleep(0.35)
    assert await registry(state).instances() == {}


async def test_withdraw_removes_an_instance_at_once(state: SharedState) -> None:
    store = registry(state)
    await store.announce("a", {}, 60.0)
    await store.announce("b", {}, 60.0)
    await registry(state).withdraw("a")
    assert await store.instances() == {"b": {}}


async def test_announcements_do_not_count_as_replica_liveness(state: SharedState) -> None:
    store = state.store()
    await store.announce("S1", {"n": 1}, 5.0)
    await store.mark_alive("S2", 5.0)
    assert await store.alive() == {"S2"}
    assert set(await store.instances()) == {"S1"}


CALLS: dict[str, Call] = {
    "announce": lambda s: s.announce("i", {"a": 1}, 1.0),
    "withdraw": lambda s: s.withdraw("i"),
    "instances": lambda s: s.instances(),
}


@pytest.mark.parametrize("how", OUTAGES)
@pytest.mark.parametrize("call", list(CALLS))
async def test_unavailable_redis_is_store_unavailable(outage: Outage, call: str, how: str) -> None:
    await outage.check(CALLS[call], how)

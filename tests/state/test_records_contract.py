"""``RecordStore`` contract: runtime records, so the next leader can adopt what any leader started.

The same bodies run over memory, fakeredis and a real redis-server (``conftest.state``). The
runtime's ``locator`` is opaque to the store and comes back as written.
"""

from __future__ import annotations

import asyncio

import pytest

from balancer.runtimes.base import ReplicaHandle
from balancer.state.store import RecordStore
from tests.state.conftest import OUTAGES, Call, Outage, SharedState, handle, replica


def records(state: SharedState) -> RecordStore:
    return state.store()


def by_name(handles: list[ReplicaHandle]) -> dict[str, ReplicaHandle]:
    names = [h.name for h in handles]
    assert len(names) == len(set(names)), f"duplicate records: {names}"
    return {h.name: h for h in handles}


async def test_records_round_trip_between_instances(state: SharedState) -> None:
    writer, reader = records(state), records(state)
    assert await reader.handles() == []
    process = ReplicaHandle("Server 1", "1", "127.0.0.1:41001", "123456:8877665")
    static = ReplicaHandle("web-3", "web-3", "10.0.0.3:80")  # no locator
    odd = ReplicaHandle("Server é", "é", "[::1]:8080", "0")  # "0" is a locator, not none
    for record in (process, static, odd):
        await writer.record_handle(record)
    read = by_name(await reader.handles())
    assert read == {"Server 1": process, "web-3": static, "Server é": odd}
    assert read["web-3"].locator == ""
    assert read["Server é"].locator == "0"
    assert all(type(h.locator) is str for h in read.values())


async def test_recording_a_name_again_replaces_its_record(state: SharedState) -> None:
    store = records(state)
    await store.record_handle(handle("S1", "127.0.0.1:1", "11:a"))
    await store.record_handle(handle("S1", "127.0.0.1:2", "22:b"))
    assert await records(state).handles() == [handle("S1", "127.0.0.1:2", "22:b")]


async def test_drop_handle_forgets_one_record(state: SharedState) -> None:
    store = records(state)
    for i in (1, 2, 3):
        await store.record_handle(handle(f"S{i}", f"127.0.0.1:{i}", str(i)))
    await records(state).drop_handle("S2")
    await store.drop_handle("never-recorded")  # not an error
    assert sorted(by_name(await store.handles())) == ["S1", "S3"]


async def test_records_are_independent_of_membership(state: SharedState) -> None:
    store = state.store()
    await store.record_handle(handle("S7", "127.0.0.1:7", "7"))
    await store.commit([replica(1)], expected_epoch=0, target=1)
    await store.commit([], expected_epoch=1, target=None)
    assert [h.name for h in await records(state).handles()] == ["S7"]


async def test_records_and_target_outlive_liveness(state: SharedState) -> None:
    store = state.store()
    record = handle("S1", "127.0.0.1:1", "42:7")
    await store.record_handle(record)
    await store.mark_alive("S1", 0.2)
    m = await store.commit([replica(1)], expected_epoch=0, target=4)
    assert m is not None and m.target == 4
    await asyncio.sleep(0.35)  # liveness ran out; the record and N did not
    assert await store.alive() == frozenset()
    assert await store.handles() == [record]
    assert (await store.membership()).target == 4
    await store.drop_handle("S1")
    assert await store.handles() == []


CALLS: dict[str, Call] = {
    "record_handle": lambda s: s.record_handle(handle("S1", "h:1", "1:x")),
    "drop_handle": lambda s: s.drop_handle("S1"),
    "handles": lambda s: s.handles(),
}


@pytest.mark.parametrize("how", OUTAGES)
@pytest.mark.parametrize("call", list(CALLS))
async def test_unavailable_redis_is_store_unavailable(outage: Outage, call: str, how: str) -> None:
    await outage.check(CALLS[call], how)

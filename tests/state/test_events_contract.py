"""``EventLog`` contract: the ``keep`` latest membership change events, newest first.

The same bodies run over memory, fakeredis and a real redis-server (``conftest.state``).
"""

from __future__ import annotations

import pytest

from balancer.state.store import EventLog
from tests.state.conftest import OUTAGES, Call, Outage, SharedState


def log_of(state: SharedState) -> EventLog:
    return state.store()


async def test_events_are_shared_bounded_and_newest_first(state: SharedState) -> None:
    writer, reader = log_of(state), log_of(state)
    assert await reader.events(10) == []
    for epoch in range(1, 6):
        await writer.record_event({"epoch": epoch, "kind": "add", "moved_share": 0.25}, 3)
    assert [e["epoch"] for e in await reader.events(10)] == [5, 4, 3]  # only the 3 newest
    assert [e["epoch"] for e in await reader.events(2)] == [5, 4]  # at most `limit`


async def test_an_event_comes_back_as_written(state: SharedState) -> None:
    event = {
        "epoch": 7,
        "kind": "replace",
        "removed": ["Server é"],
        "added": ["Server 9"],
        "moved_share": 0.125,
        "settings": {"algorithm": "maglev", "balance_factor": 1.25},
        "target": None,
    }
    await log_of(state).record_event(event, 10)
    assert await log_of(state).events(1) == [event]


async def test_the_log_keeps_a_copy_not_the_callers_dict(state: SharedState) -> None:
    store = log_of(state)
    event: dict[str, object] = {"epoch": 1}
    await store.record_event(event, 10)
    event["epoch"] = 2  # the caller reuses its dict
    read = await store.events(10)
    assert read == [{"epoch": 1}]
    read[0]["epoch"] = 3  # nor does a reader's change reach the log
    assert await log_of(state).events(10) == [{"epoch": 1}]


async def test_a_smaller_keep_trims_older_events(state: SharedState) -> None:
    store = log_of(state)
    for epoch in range(1, 11):
        await store.record_event({"epoch": epoch}, 100)
    await store.record_event({"epoch": 11}, 4)
    assert [e["epoch"] for e in await log_of(state).events(100)] == [11, 10, 9, 8]


CALLS: dict[str, Call] = {
    "record_event": lambda s: s.record_event({"epoch": 2}, 10),
    "events": lambda s: s.events(10),
}


@pytest.mark.parametrize("how", OUTAGES)
@pytest.mark.parametrize("call", list(CALLS))
async def test_unavailable_redis_is_store_unavailable(outage: Outage, call: str, how: str) -> None:
    await outage.check(CALLS[call], how)

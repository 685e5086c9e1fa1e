"""``RingView``: a change swaps in a snapshot built off the event loop."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from balancer.hashing import RingSettings
from balancer.state import view as view_module
from balancer.state.memory import InMemoryStore
from balancer.state.store import Replica
from balancer.state.view import RingView


def replicas(*names: str) -> list[Replica]:
    return [Replica(n, i, f"127.0.0.1:{7000 + i}") for i, n in enumerate(names, 1)]


async def test_a_ring_is_built_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ring costs ~13 ms of CPU to build (slots, 160 points per weight; measured on the CI
    machine): on the loop, every instance would stall every connection on every change."""
    threads: list[threading.Thread] = []
    real = view_module.build_snapshot

    def recording(*args: Any) -> view_module.Snapshot:
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(view_module, "build_snapshot", recording)
    store = InMemoryStore()
    view = RingView(store, RingSettings())
    swaps: list[tuple[int, int]] = []
    view.listeners.append(lambda old, new: swaps.append((old.epoch, new.epoch)))
    threads.clear()  # the empty snapshot the view starts with is built in __init__

    await store.commit(replicas("a", "b", "c"), expected_epoch=0)
    assert (await view.refresh()).epoch == 1
    await store.commit(replicas("a", "b"), expected_epoch=1)
    snapshot = await view.refresh()

    assert snapshot.epoch == 2 and sorted(snapshot.ring.members) == ["a", "b"]
    assert swaps == [(0, 1), (1, 2)]
    assert len(threads) == 2
    assert threading.main_thread() not in threads


async def test_an_unchanged_epoch_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    store = InMemoryStore()
    await store.commit(replicas("a"), expected_epoch=0)
    view = RingView(store, RingSettings())
    first = await view.refresh()
    monkeypatch.setattr(view_module, "build_snapshot", pytest.fail)
    assert await view.refresh() is first

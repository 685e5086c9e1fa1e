"""The manager rig shared by the manager and reconciler tests: an in-memory store that records
its commits, the in-process runtime, and a leadership the test sets by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from balancer.control.manager import ReplicaManager
from balancer.runtimes.base import ReplicaHandle
from balancer.state.coordination import SoloLeadership
from balancer.state.memory import InMemoryStore
from balancer.state.store import Membership, Replica, Store
from tests.support.runtime import InProcessRuntime


class FakeLeadership(SoloLeadership):
    """A ``Leadership`` whose standing and fencing token the test sets."""

    def __init__(self, *, is_leader: bool = True, token: int | None = 1) -> None:
        self.is_leader = is_leader
        self.token = token


@dataclass
class CommitCall:
    names: list[str]
    expected_epoch: int
    fence_token: int | None
    target: int | None


class RecordingStore(InMemoryStore):
    """An ``InMemoryStore`` that remembers every commit's arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[CommitCall] = []

    async def commit(
        self,
        replicas: Sequence[Replica],
        *,
        expected_epoch: int,
        fence_token: int | None = None,
        target: int | None = None,
        **routing: Any,
    ) -> Membership | None:
        self.commits.append(
            CommitCall([r.name for r in replicas], expected_epoch, fence_token, target)
        )
        return await super().commit(
            replicas,
            expected_epoch=expected_epoch,
            fence_token=fence_token,
            target=target,
            **routing,
        )


async def ready(address: str) -> None:
    return None


@dataclass
class Rig:
    store: RecordingStore
    runtime: InProcessRuntime
    leadership: FakeLeadership
    manager: ReplicaManager
    refreshes: list[int] = field(default_factory=list)

    async def membership(self) -> Membership:
        return await self.store.membership()

    async def records(self) -> dict[str, ReplicaHandle]:
        return {h.name: h for h in await self.store.handles()}

    async def running(self) -> set[str]:
        return {h.name for h in await self.runtime.list()}


def make_manager(
    store: Store,
    runtime: InProcessRuntime,
    leadership: FakeLeadership,
    *,
    wait_ready: Callable[[str], Awaitable[None]] = ready,
    on_change: Callable[[], Awaitable[object]] | None = None,
    max_replicas: int = 20,
) -> ReplicaManager:
    async def nothing() -> None:
        return None

    return ReplicaManager(
        store,
        runtime,
        wait_ready,
        on_change or nothing,
        max_replicas=max_replicas,
        alive_ttl_s=5.0,
        leadership=leadership,
    )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store = RecordingStore()
    runtime = InProcessRuntime()
    leadership = FakeLeadership(token=7)
    refreshes: list[int] = []

    async def on_change() -> None:
        refreshes.append((await store.membership()).epoch)

    manager = make_manager(store, runtime, leadership, on_change=on_change)
    yield Rig(store, runtime, leadership, manager, refreshes)
    await runtime.close()

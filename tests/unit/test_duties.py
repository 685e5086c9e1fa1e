"""``LeaderDuties``: the leader's tasks run for exactly as long as the lease is held.

The leadership is a fake whose election and loss the test triggers; the reconciler, health
monitor and relay are small fakes with the same method names that count their starts and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from balancer.control.duties import LeaderDuties
from balancer.state.coordination import AdminReply, ChangeHandler
from tests.conftest import eventually


class ControlledLeadership:
    """A ``Leadership`` whose campaigns the test decides."""

    def __init__(self) -> None:
        self._leader = False
        self.token: int | None = None
        self._elected = asyncio.Event()
        self._lost = asyncio.Event()
        self._lost.set()
        self._campaigned = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self._leader

    def elect(self, token: int) -> None:
        self._leader, self.token = True, token
        self._lost.clear()
        self._elected.set()
        self._campaigned.set()

    def lose(self) -> None:
        self._leader, self.token = False, None
        self._elected.clear()
        self._lost.set()
        self._campaigned.set()

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def wait_elected(self) -> None:
        await self._elected.wait()

    async def wait_lost(self) -> None:
        await self._lost.wait()

    async def wait_campaigned(self) -> None:
        await self._campaigned.wait()

    async def release(self) -> None:
        self.lose()


class Service:
    """A task that runs until cancelled, counting its starts and stops."""

    def __init__(self) -> None:
        self.starts = 0
        self.stops = 0
        self.stopped_at = 0.0
        self.fail_next: BaseException | None = None

    @property
    def active(self) -> bool:
        return self.starts > self.stops

    async def loop(self) -> None:
        self.starts += 1
        try:
            if self.fail_next is not None:
                error, self.fail_next = self.fail_next, None
                await asyncio.sleep(0.01)
                raise error
            await asyncio.Event().wait()
        finally:
            self.stops += 1
            self.stopped_at = time.monotonic()


class FakeReconciler(Service):
    """Gets ``ready`` once ``gate`` opens (its first round got past adoption and boot)."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def run(self) -> None:
        ready = asyncio.create_task(self._ready_after_gate())
        try:
            await self.loop()
        finally:
            ready.cancel()

    async def _ready_after_gate(self) -> None:
        await self.gate.wait()
        self.ready.set()


class FakeMonitor(Service):
    async def run(self) -> None:
        await self.loop()


class FakeRelay(Service):
    def __init__(self) -> None:
        super().__init__()
        self.handlers: list[object] = []

    async def serve(self, handle: ChangeHandler) -> None:
        self.handlers.append(handle)
        await self.loop()

    async def forward(self, op: str, n: int, hostnames: list[str]) -> AdminReply:
        raise AssertionError("the leader never forwards")


async def handle_change(op: str, args: dict[str, Any]) -> AdminReply:
    return AdminReply(200, b"")


class Rig:
    def __init__(self) -> None:
        self.leadership = ControlledLeadership()
        self.reconciler = FakeReconciler()
        self.monitor = FakeMonitor()
        self.relay = FakeRelay()
        self.duties = LeaderDuties(
            self.leadership,
            self.reconciler,  # type: ignore[arg-type]
            self.monitor,  # type: ignore[arg-type]
            self.relay,
            handle_change,
        )

    @property
    def services(self) -> list[Service]:
        return [self.reconciler, self.monitor, self.relay]

    async def all_active(self) -> bool:
        return all(s.active for s in self.services)

    async def none_active(self) -> bool:
        return not any(s.active for s in self.services)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig()
    task = asyncio.create_task(rig.duties.run(), name="test duties")
    yield rig
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 2.0)
    assert not any(s.active for s in rig.services), "a leader task outlived the duties"


async def test_a_follower_is_ready_after_its_first_campaign_and_runs_nothing(rig: Rig) -> None:
    await asyncio.sleep(0.05)
    assert not rig.duties.ready.is_set()  # no campaign yet: we do not know our role
    rig.leadership.lose()  # the first campaign finished, lost
    await asyncio.wait_for(rig.duties.ready.wait(), 1.0)
    await asyncio.sleep(0.05)
    assert rig.duties.terms == 0
    assert all(s.starts == 0 for s in rig.services)


async def test_an_elected_instance_runs_the_reconciler_monitor_and_relay(rig: Rig) -> None:
    rig.leadership.elect(token=4)
    await eventually(rig.all_active, timeout_s=1.0)
    await asyncio.wait_for(rig.duties.ready.wait(), 1.0)
    assert rig.duties.terms == 1
    assert rig.relay.handlers == [handle_change]
    assert [s.starts for s in rig.services] == [1, 1, 1]


async def test_losing_the_lease_stops_every_task_promptly_and_a_new_term_restarts_them(
    rig: Rig,
) -> None:
    rig.leadership.elect(token=1)
    await eventually(rig.all_active, timeout_s=1.0)
    lost_at = time.monotonic()
    rig.leadership.lose()
    await eventually(rig.none_active, timeout_s=1.0)
    stopped = max(s.stopped_at for s in rig.services) - lost_at
    assert stopped < 0.5, f"the leader's tasks ran {stopped:.2f}s past the lease"
    await asyncio.sleep(0.1)  # and nothing starts again while following
    assert [s.starts for s in rig.services] == [1, 1, 1]

    rig.leadership.elect(token=2)  # a second term
    await eventually(rig.all_active, timeout_s=1.0)
    assert rig.duties.terms == 2
    assert [s.starts for s in rig.services] == [2, 2, 2]
    assert len(rig.relay.handlers) == 2


async def test_a_leader_is_ready_only_once_its_first_round_got_past_adoption_and_boot(
    rig: Rig,
) -> None:
    rig.reconciler.gate.clear()
    rig.leadership.elect(token=1)
    await eventually(rig.all_active, timeout_s=1.0)  # probing starts with the term
    await asyncio.sleep(0.05)
    assert not rig.duties.ready.is_set()
    rig.reconciler.gate.set()
    await asyncio.wait_for(rig.duties.ready.wait(), 1.0)


async def test_a_lease_lost_before_the_boot_leaves_a_ready_follower(rig: Rig) -> None:
    rig.reconciler.gate.clear()
    rig.leadership.elect(token=1)
    await eventually(rig.all_active, timeout_s=1.0)
    rig.leadership.lose()
    await eventually(rig.none_active, timeout_s=1.0)
    await asyncio.wait_for(rig.duties.ready.wait(), 1.0)  # following again: ready as one


async def test_a_crashed_task_ends_its_siblings_and_the_term_restarts(rig: Rig) -> None:
    rig.monitor.fail_next = RuntimeError("monitor bug")
    rig.leadership.elect(token=1)
    await eventually(lambda: _started(rig, 1), timeout_s=1.0)
    await eventually(rig.none_active, timeout_s=1.0)  # the siblings were cancelled
    await eventually(lambda: _started(rig, 2), timeout_s=3.0)
    await eventually(rig.all_active, timeout_s=1.0)
    assert rig.duties.terms == 2


async def _started(rig: Rig, n: int) -> bool:
    return all(s.starts >= n for s in rig.services)

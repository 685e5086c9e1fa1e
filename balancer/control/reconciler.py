"""The leader's control loop: observe everything, ``plan``, act; level-triggered.

Owns ``Reconciler``. Each round reads the whole state (the stored membership, what this instance
routes on, what the runtime runs, the runtime records, the health checks' DOWN verdicts), asks
``balancer.control.plan.plan`` what to do and applies the actions through the ``ReplicaManager``
(which commits with the leader's fencing token and re-checks each change against the latest
membership under its lock) and the runtime. Nothing that happens is an instruction: a failed
heartbeat, ``/add``, ``/rm``, a ring change or a timer only wakes the loop, and every decision is
made again from the state it observes, so a lost wake-up or an action that failed is made up for
by the next round (at most ``resync_s`` later). Runs only on the leader, for one term at a time.

With a runtime whose replicas another system runs (``balancer.runtimes.discovery``) the policy is
``discovered``: the runtime's ``watch`` runs beside the loop for the term and wakes it when the
list changes; a listed replica that failed to join is not tried again for a while (a backoff per
name, up to ``_JOIN_RETRY_CAP_S``), and at most ``_JOIN_BATCH`` are checked per round, each for
at most ``join_wait_s``, so dead addresses in the list never hold the loop for long.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping

from balancer.backoff import Backoff
from balancer.control.manager import ReplicaManager
from balancer.control.plan import (
    Action,
    Adopt,
    Boot,
    Evict,
    Join,
    Observed,
    Policy,
    Restore,
    Spawn,
    StopStrays,
    next_wake,
    plan,
)
from balancer.errors import LBError
from balancer.names import initial_names, server_id
from balancer.runtimes.base import ReplicaHandle, ReplicaRuntime
from balancer.runtimes.discovery import Discovered, managed_by
from balancer.state.store import Membership, Replica, Store

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_AGAIN_S = 0.05  # after a round that acted, look again this soon (unless woken earlier)
_JOIN_WAIT_S = 2.0  # a listed replica's first health check, when it joins
_JOIN_BATCH = 16  # listed replicas checked per round
_JOIN_RETRY_S = 0.5  # a listed replica that failed to join waits this, doubled per failure…
_JOIN_RETRY_CAP_S = 10.0  # …up to this, before it is checked again


class Reconciler:
    """Keeps the observed state converging on the desired one (see the module docstring)."""

    def __init__(
        self,
        policy: Policy,
        manager: ReplicaManager,
        store: Store,
        runtime: ReplicaRuntime,
        *,
        known: Callable[[], Membership],
        down: Callable[[], Mapping[str, float]],
        backoff: Backoff | None = None,
        resync_s: float = 1.0,
        join_wait_s: float = _JOIN_WAIT_S,
        clock: Clock = time.monotonic,
    ) -> None:
        """``known`` is the membership this instance routes on; ``down`` the health checks'
        DOWN members with the ``clock`` time each went DOWN. A runtime whose replicas another
        system runs makes the policy ``discovered``."""
        self._managed_by = managed_by(runtime)
        self._policy = dataclasses.replace(
            policy, discovered=policy.discovered or bool(self._managed_by)
        )
        self._manager = manager
        self._store = store
        self._runtime = runtime
        self._known = known
        self._down = down
        self._backoff = backoff or Backoff()
        self._resync_s = resync_s
        self._join_wait_s = join_wait_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._adopted: set[str] = set()  # adopted this term
        self._gone: set[str] = set()  # adoption found them gone: do not ask again this term
        self._last: list[Action] = []
        self._join_failures: dict[str, tuple[int, float]] = {}  # name → (failures, retry at)
        self.ready = asyncio.Event()  # the term's first round got past adoption and boot

    def wake(self) -> None:
        """Something changed: run a round now (safe to call from any callback)."""
        self._wake.set()

    async def run(self) -> None:
        """Reconcile until cancelled (the term ends); a failed round is retried with backoff.
        A discovering runtime's ``watch`` runs beside the loop and wakes it."""
        self._adopted.clear()
        self._gone.clear()
        self._join_failures.clear()
        if not isinstance(self._runtime, Discovered):
            await self._loop()
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(self._runtime.watch(self.wake))
            await self._loop()

    async def _loop(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                seen, actions = await self.reconcile_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = self._backoff.compute(failures)
                log.error(
                    "reconcile: %s; again in %.1fs",
                    exc,
                    delay,
                    exc_info=not isinstance(exc, LBError),
                )
                await self._sleep(delay)
                continue
            await self._sleep(self._pause_s(seen, actions))

    async def reconcile_once(self) -> tuple[Observed, list[Action]]:
        """One round: observe, plan, apply every action in order. Returns what it saw and did.

        Raises:
            LBError: an action failed (the store, the runtime or leadership); the next round
                observes again and decides anew.
        """
        seen = await self.observe()
        actions = plan(self._policy, seen)
        for action in actions:
            await self._act(action)
        if not any(isinstance(a, Restore | Adopt | StopStrays) for a in actions):
            self.ready.set()
        return seen, actions

    async def observe(self) -> Observed:
        """Everything ``plan`` needs, read now."""
        stored = await self._store.membership()
        handles = await self._runtime.list()
        running = frozenset(h.name for h in handles)
        records = {h.name: h for h in await self._store.handles()}
        for replica in stored.replicas:  # a record lost with the store's data: the member's own
            if replica.name not in records and _locates(replica):
                records[replica.name] = _handle_of(replica)
        self._gone &= set(records)
        for name in self._gone:
            del records[name]
        now = self._clock()
        listed = {h.name: h for h in handles if self._may_join(h.name, now)}
        seen = Observed(stored, self._known(), running, records, dict(self._down()), now, listed)
        return seen

    def _may_join(self, name: str, now: float) -> bool:
        """False while a listed replica that failed to join waits to be checked again."""
        return self._join_failures.get(name, (0, now))[1] <= now

    async def _act(self, action: Action) -> None:
        match action:
            case Restore(membership):
                await self._manager.restore(membership)
            case Adopt(handle):
                await self._adopt(handle)
            case StopStrays(names):
                await self._manager.stop_strays(names)
            case Boot(count):
                await self._boot(count)
            case Join(handles):
                await self._join(handles[:_JOIN_BATCH])
            case Evict(name, running):
                await self._evict(name, running)
            case Spawn(owed):
                membership = await self._manager.add(1, [], grow=False)
                log.info(
                    "replacement %s started; N=%d of %s (%d owed before it)",
                    membership.names[-1],
                    len(membership.replicas),
                    membership.target,
                    owed,
                )

    async def _evict(self, name: str, running: bool) -> None:
        if not await self._manager.evict(name):
            return
        if self._managed_by and not running:
            log.warning("replica %s left %s and was evicted", name, self._managed_by)
        elif self._managed_by:
            log.warning("replica %s failed its health checks and was evicted", name)
        else:
            graced = running and self._policy.replace_after_s > 0
            why = "stayed DOWN past its grace period" if graced else "failed"
            log.warning("replica %s %s and was evicted; starting a replacement", name, why)

    async def _join(self, handles: tuple[ReplicaHandle, ...]) -> None:
        """Let in the listed replicas that answer; the others wait before the next check."""
        joined = set(await self._manager.join(handles, timeout_s=self._join_wait_s))
        now = self._clock()
        for handle in handles:
            if handle.name in joined:
                self._join_failures.pop(handle.name, None)
                log.info(
                    "replica %s (%s) joined from %s", handle.name, handle.address, self._managed_by
                )
                continue
            failures = self._join_failures.get(handle.name, (0, now))[0] + 1
            wait_s = min(_JOIN_RETRY_CAP_S, _JOIN_RETRY_S * 2 ** min(failures - 1, 10))
            self._join_failures[handle.name] = (failures, now + wait_s)

    async def _adopt(self, handle: ReplicaHandle) -> None:
        """Take charge of a replica an earlier leader started; forget its record if it is gone.

        A replica adopted once this term that the runtime no longer runs died since: gone."""
        if handle.name not in self._adopted and await self._runtime.adopt(handle):
            self._adopted.add(handle.name)
            log.info("adopted replica %s", handle.name)
            return
        self._gone.add(handle.name)
        await self._store.drop_handle(handle.name)

    async def _boot(self, count: int) -> None:
        """Start ``Server 1`` … ``Server count``. One attempt: if it fails, N is set anyway and
        later rounds start what is owed (with generated names) while the balancer answers."""
        try:
            await self._manager.add(count, initial_names(count))
        except LBError as exc:
            log.error("could not start the initial replicas (%s); retrying in the background", exc)
            await self._manager.set_target(count)

    def _pause_s(self, seen: Observed, actions: list[Action]) -> float:
        repeated, self._last = actions == self._last, actions
        if actions and not repeated:  # a round that changed something: look again soon
            return _AGAIN_S
        wake_at = next_wake(self._policy, seen)
        if wake_at is None:
            return self._resync_s
        return max(0.0, min(self._resync_s, wake_at - self._clock()))

    async def _sleep(self, delay_s: float) -> None:
        """Sleep ``delay_s`` unless woken first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._wake.wait()


def _locates(replica: Replica) -> bool:
    return bool(replica.locator)


def _handle_of(replica: Replica) -> ReplicaHandle:
    return ReplicaHandle(replica.name, server_id(replica.name), replica.address, replica.locator)

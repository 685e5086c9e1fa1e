"""The leader's control loop: observe everything, ``plan``, act; level-triggered.

Owns ``Reconciler``. Each round reads the whole state (the stored membership, what this instance
routes on, what the runtime runs, the runtime records, the health checks' DOWN verdicts), asks
``balancer.control.plan.plan`` what to do and applies the actions through the ``ReplicaManager``
(which commits with the leader's fencing token and re-checks each change against the latest
membership under its lock) and the runtime. Nothing that happens is an instruction: a failed
heartbeat, ``/add``, ``/rm``, a ring change or a timer only wakes the loop, and every decision is
made again from the state it observes, so a lost wake-up or an action that failed is made up for
by the next round (at most ``resync_s`` later). Runs only on the leader, for one term at a time.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from balancer.state.store import Membership, Replica, Store

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_AGAIN_S = 0.05  # after a round that acted, look again this soon (unless woken earlier)


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
        clock: Clock = time.monotonic,
    ) -> None:
        """``known`` is the membership this instance routes on; ``down`` the health checks'
        DOWN members with the ``clock`` time each went DOWN."""
        self._policy = policy
        self._manager = manager
        self._store = store
        self._runtime = runtime
        self._known = known
        self._down = down
        self._backoff = backoff or Backoff()
        self._resync_s = resync_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._adopted: set[str] = set()  # adopted this term
        self._gone: set[str] = set()  # adoption found them gone: do not ask again this term
        self._last: list[Action] = []
        self.ready = asyncio.Event()  # the term's first round got past adoption and boot
        self.rounds = 0

    def wake(self) -> None:
        """Something changed: run a round now (safe to call from any callback)."""
        self._wake.set()

    async def run(self) -> None:
        """Reconcile until cancelled (the term ends); a failed round is retried with backoff."""
        self._adopted.clear()
        self._gone.clear()
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
        self.rounds += 1
        for action in actions:
            await self._act(action)
        if not any(isinstance(a, Restore | Adopt | StopStrays) for a in actions):
            self.ready.set()
        return seen, actions

    async def observe(self) -> Observed:
        """Everything ``plan`` needs, read now."""
        stored = await self._store.membership()
        running = frozenset(h.name for h in await self._runtime.list())
        records = {h.name: h for h in await self._store.handles()}
        for replica in stored.replicas:  # a record lost with the store's data: the member's own
            if replica.name not in records and _locates(replica):
                records[replica.name] = _handle_of(replica)
        self._gone &= set(records)
        for name in self._gone:
            del records[name]
        return Observed(stored, self._known(), running, records, dict(self._down()), self._clock())

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
            case Evict(name, running):
                if await self._manager.evict(name):
                    graced = running and self._policy.replace_after_s > 0
                    why = "stayed DOWN past its grace period" if graced else "failed"
                    log.warning("replica %s %s and was evicted; starting a replacement", name, why)
            case Spawn(owed):
                membership = await self._manager.add(1, [], grow=False)
                log.info(
                    "replacement %s started; N=%d of %s (%d owed before it)",
                    membership.names[-1],
                    len(membership.replicas),
                    membership.target,
                    owed,
                )

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

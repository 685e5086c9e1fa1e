"""The leader's work, done for exactly as long as this instance leads.

Owns ``LeaderDuties``. When a term begins: write the ring back if the store lost its data, adopt
the replicas earlier leaders started, boot the initial replicas if no leader has yet; then run
the health monitor, the supervisor, the admin relay (changes handed over by followers) and the
store guard (restores lost data, stops stray replicas) until the lease is lost, which cancels
all of them at once. A single instance (``SoloLeadership``) holds one term forever.
Must not import: redis, aiohttp, docker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from balancer.control.health import HealthMonitor
from balancer.control.manager import ReplicaManager
from balancer.control.supervisor import Supervisor
from balancer.errors import LBError
from balancer.state.coordination import AdminRelay, ChangeHandler, Leadership
from balancer.state.store import Membership

log = logging.getLogger(__name__)

_RETRY_TERM_S = 1.0
_GUARD_EVERY_S = 1.0
_STRAYS_EVERY = 10


class LeaderDuties:
    """Runs the leader's tasks during each term (see the module docstring)."""

    def __init__(
        self,
        leadership: Leadership,
        manager: ReplicaManager,
        supervisor: Supervisor,
        monitor: HealthMonitor,
        relay: AdminRelay,
        handle_change: ChangeHandler,
        *,
        replicas: int,
        known: Callable[[], Membership],
    ) -> None:
        self._leadership = leadership
        self._manager = manager
        self._supervisor = supervisor
        self._monitor = monitor
        self._relay = relay
        self._handle_change = handle_change
        self._replicas = replicas
        self._known = known  # the membership this instance routes on
        self.ready = asyncio.Event()  # the first term booted its replicas, or we follow
        self.terms = 0

    async def run(self) -> None:
        """Follow until elected, lead until the lease is lost; forever."""
        while True:
            await self._leadership.wait_campaigned()
            if not self._leadership.is_leader:
                self.ready.set()
                await self._leadership.wait_elected()
            self.terms += 1
            log.info("leader term %d begins (token %s)", self.terms, self._leadership.token)
            if not await self._lead():
                await asyncio.sleep(_RETRY_TERM_S)

    async def _lead(self) -> bool:
        """Serve one term until the lease is lost. False when the term failed on its own."""
        term = asyncio.create_task(self._term(), name="leader term")
        lost = asyncio.create_task(self._leadership.wait_lost(), name="lease watch")
        try:
            await asyncio.wait({term, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (term, lost):
                task.cancel()
            await asyncio.wait({term, lost})  # never raises; the term's error is read below
        error = None if term.cancelled() else term.exception()
        if error is not None:
            log.error("leader term failed: %r; starting it again", error)
            return False
        log.info("leader term %d ended", self.terms)
        return True

    async def _term(self) -> None:
        await self._manager.restore(self._known())
        adopted, stopped = await self._manager.adopt()
        stopped += len(await self._manager.remove_strays())
        if adopted or stopped:
            log.info("adopted %d running replicas, stopped %d strays", adopted, stopped)
        await self._supervisor.bootstrap(self._replicas)
        self.ready.set()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._monitor.run(), name="health monitor")
            group.create_task(self._supervisor.run(), name="supervisor")
            group.create_task(self._relay.serve(self._handle_change), name="admin relay")
            group.create_task(self._guard(), name="store guard")

    async def _guard(self) -> None:
        """Write the ring back whenever the store loses its data (e.g. Redis restarted empty),
        and every ``_STRAYS_EVERY`` rounds stop running replicas that are not members."""
        rounds = 0
        while True:
            await asyncio.sleep(_GUARD_EVERY_S)
            rounds += 1
            try:
                await self._manager.restore(self._known())
                if rounds % _STRAYS_EVERY == 0:
                    await self._manager.remove_strays()
            except LBError as exc:
                log.warning("store guard: %s", exc)

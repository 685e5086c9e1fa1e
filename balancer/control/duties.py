"""The leader's work, done for exactly as long as this instance leads.

Owns ``LeaderDuties``. During a term it runs three tasks: the health monitor (probes the
members), the reconciler (adopts, boots, restores, replaces: ``balancer.control.reconciler``) and
the admin relay (changes handed over by followers), until the lease is lost, which cancels all of
them at once. The instance is ``ready`` once it follows, or once its first term's reconciler got
past adoption and boot. A single instance (``SoloLeadership``) holds one term forever.
Must not import: redis, aiohttp, docker.
"""

from __future__ import annotations

import asyncio
import logging

from balancer.control.health import HealthMonitor
from balancer.control.reconciler import Reconciler
from balancer.state.coordination import AdminRelay, ChangeHandler, Leadership

log = logging.getLogger(__name__)

_RETRY_TERM_S = 1.0


class LeaderDuties:
    """Runs the leader's tasks during each term (see the module docstring)."""

    def __init__(
        self,
        leadership: Leadership,
        reconciler: Reconciler,
        monitor: HealthMonitor,
        relay: AdminRelay,
        handle_change: ChangeHandler,
    ) -> None:
        self._leadership = leadership
        self._reconciler = reconciler
        self._monitor = monitor
        self._relay = relay
        self._handle_change = handle_change
        self.ready = asyncio.Event()  # the first term got past adoption and boot, or we follow
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
        async with asyncio.TaskGroup() as group:
            group.create_task(self._reconciler.run(), name="reconciler")
            group.create_task(self._monitor.run(), name="health monitor")
            group.create_task(self._relay.serve(self._handle_change), name="admin relay")
            await self._reconciler.ready.wait()
            self.ready.set()

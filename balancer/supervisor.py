"""Keeps N: boots the initial replicas and replaces every replica that fails.

Owns ``Supervisor``. The health monitor reports a dead replica; the supervisor evicts it (out of
the ring, process stopped) and owes one replacement, which it starts under a NEW random name,
retrying with backoff until it passes its first heartbeat. A replica removed with ``/rm`` is never
replaced: eviction of a name that is no longer a member owes nothing.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
import logging

from balancer.backoff import Backoff
from balancer.errors import LBError
from balancer.manager import ReplicaManager
from balancer.names import initial_names
from balancer.store import Store

log = logging.getLogger(__name__)


class Supervisor:
    """Replaces failed replicas (see the module docstring)."""

    def __init__(self, manager: ReplicaManager, store: Store, backoff: Backoff | None = None):
        self._manager = manager
        self._store = store
        self._backoff = backoff or Backoff()
        self._dead: asyncio.Queue[str] = asyncio.Queue()
        self.owed = 0
        self.replaced = 0

    async def on_dead(self, name: str) -> None:
        """Called by the health monitor; returns at once."""
        self._dead.put_nowait(name)

    async def bootstrap(self, count: int) -> None:
        """Start ``Server 1`` … ``Server count`` when the membership is empty."""
        if (await self._store.membership()).replicas or count == 0:
            return
        failures = 0
        while True:
            try:
                await self._manager.add(count, initial_names(count))
                return
            except LBError as exc:
                failures += 1
                delay = self._backoff.compute(failures)
                log.error("could not start the initial replicas (%s); retry in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def run(self) -> None:
        """Evict dead replicas and start their replacements, forever."""
        failures = 0
        while True:
            if self.owed == 0:
                await self._evict(await self._dead.get())
            while not self._dead.empty():
                await self._evict(self._dead.get_nowait())
            if self.owed == 0:
                continue
            try:
                membership = await self._manager.add(1, [])
            except LBError as exc:
                failures += 1
                delay = self._backoff.compute(failures)
                log.error("replacement failed (%s); %d owed, retry in %.1fs", exc, self.owed, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.owed -= 1
            self.replaced += 1
            log.info("replacement %s started; N=%d", membership.names[-1], len(membership.replicas))

    async def _evict(self, name: str) -> None:
        if await self._manager.evict(name):
            self.owed += 1
            log.warning("replica %s failed and was evicted; starting a replacement", name)

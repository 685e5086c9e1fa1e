"""Keeps N: boots the initial replicas and replaces every replica that fails.

Owns ``Supervisor``. The health monitor reports a dead replica; the supervisor evicts it (out of
the ring, process killed) and owes one replacement, which it starts under a NEW random name,
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
        self._reported: set[str] = set()
        self.owed = 0

    async def on_dead(self, name: str) -> None:
        """Called by the health monitor (possibly every round); returns at once."""
        if name not in self._reported:
            self._reported.add(name)
            self._dead.put_nowait(name)

    async def bootstrap(self, count: int) -> None:
        """Start ``Server 1`` … ``Server count`` when the membership is empty.

        One attempt, so a healthy start is ready before the balancer listens; if it fails, the
        replicas are owed and ``run`` keeps trying (with generated names) while the balancer
        already answers, with 503 until the first replica is up.
        """
        if (await self._store.membership()).replicas or count == 0:
            return
        try:
            await self._manager.add(count, initial_names(count))
        except LBError as exc:
            self.owed += count
            log.error("could not start the initial replicas (%s); retrying in the background", exc)

    async def run(self) -> None:
        """Evict dead replicas and start their replacements, forever."""
        failures = 0
        while True:
            try:
                await self._step()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = self._backoff.compute(failures)
                log.error(
                    "supervisor: %s; %d owed, retry in %.1fs",
                    exc,
                    self.owed,
                    delay,
                    exc_info=not isinstance(exc, LBError),
                )
                await asyncio.sleep(delay)

    async def _step(self) -> None:
        """Wait for work if none is owed, evict every reported replica, start one replacement."""
        if self.owed == 0 and self._dead.empty():
            self._dead.put_nowait(await self._dead.get())
        while not self._dead.empty():
            name = self._dead.get_nowait()
            try:
                if await self._manager.evict(name):
                    self.owed += 1
                    log.warning("replica %s failed and was evicted; starting a replacement", name)
            except BaseException:
                self._dead.put_nowait(name)  # try the eviction again next step
                raise
            self._reported.discard(name)
        if self.owed:
            membership = await self._manager.add(1, [])
            self.owed -= 1
            log.info("replacement %s started; N=%d", membership.names[-1], len(membership.replicas))

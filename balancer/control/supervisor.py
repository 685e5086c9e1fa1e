"""Keeps N: boots the initial replicas and replaces every replica that fails.

Owns ``Supervisor``. The health monitor reports a replica that went DOWN; the supervisor evicts
it (out of the ring, process killed), which leaves fewer members than the target N kept in the
store, so it starts a replacement under a NEW random name, retrying with backoff until one passes
its first heartbeat. ``/rm`` lowers N, so a removed replica is never replaced. Runs only on the
leader. With ``replace_after_s`` > 0, a DOWN replica whose process or container still runs (hung,
or briefly unreachable) is given that long to come back UP (the monitor's ``rise``) before it is
replaced; one that is gone is replaced at once.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from balancer.backoff import Backoff
from balancer.control.manager import ReplicaManager
from balancer.errors import LBError
from balancer.names import initial_names
from balancer.state.store import Store

log = logging.getLogger(__name__)


class Supervisor:
    """Keeps the replica count at the target N (see the module docstring)."""

    def __init__(
        self,
        manager: ReplicaManager,
        store: Store,
        backoff: Backoff | None = None,
        *,
        resync_s: float = 1.0,
        replace_after_s: float = 0.0,
        is_running: Callable[[str], Awaitable[bool]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._manager = manager
        self._store = store
        self._backoff = backoff or Backoff()
        self._resync_s = resync_s
        self._replace_after_s = replace_after_s
        self._is_running = is_running
        self._clock = clock  # None: the event loop's clock
        self._dead: asyncio.Queue[str] = asyncio.Queue()
        self._reported: set[str] = set()
        self.waiting: dict[str, float] = {}  # DOWN but running: name → when to replace it

    async def on_dead(self, name: str) -> None:
        """Called by the health monitor (possibly every round); returns at once."""
        if name not in self._reported:
            self._reported.add(name)
            self._dead.put_nowait(name)

    async def on_up(self, name: str) -> None:
        """Called by the health monitor when a DOWN replica passed ``rise`` probes: keep it."""
        self._reported.discard(name)
        if self.waiting.pop(name, None) is not None:
            log.warning("replica %s came back within the grace period; keeping it", name)

    async def bootstrap(self, count: int) -> None:
        """Start ``Server 1`` … ``Server count`` when no leader has set N yet.

        One attempt, so a healthy start is ready before the balancer listens; if it fails, N is
        set anyway and ``run`` keeps starting what is owed (with generated names) while the
        balancer already answers, with 503 until the first replica is up.
        """
        if (await self._store.membership()).target is not None:
            return
        try:
            await self._manager.add(count, initial_names(count))
        except LBError as exc:
            log.error("could not start the initial replicas (%s); retrying in the background", exc)
            await self._manager.set_target(count)

    async def run(self) -> None:
        """Evict dead replicas and start what N is owed, forever."""
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
                    "supervisor: %s; retry in %.1fs",
                    exc,
                    delay,
                    exc_info=not isinstance(exc, LBError),
                )
                await asyncio.sleep(delay)

    async def _step(self) -> None:
        """Evict every reported replica, then start one replica if fewer than N run.

        With nothing reported and nothing owed, waits up to ``resync_s`` for a report first:
        the target lives in the store, so a leader that took over also starts what its
        predecessor still owed.
        """
        if self._dead.empty() and not self._overdue() and not await self._owed():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_wait_s()):
                    self._dead.put_nowait(await self._dead.get())
        while not self._dead.empty():
            name = self._dead.get_nowait()
            if name in self._reported and await self._grant_grace(name):
                continue
            await self._evict(name)
        for name in self._overdue():
            log.warning(
                "replica %s stayed DOWN for %.1fs; replacing it", name, self._replace_after_s
            )
            await self._evict(name)
        if await self._owed():
            membership = await self._manager.add(1, [], grow=False)
            log.info(
                "replacement %s started; N=%d of %s",
                membership.names[-1],
                len(membership.replicas),
                membership.target,
            )

    async def _evict(self, name: str) -> None:
        self.waiting.pop(name, None)
        try:
            if await self._manager.evict(name):
                log.warning("replica %s failed and was evicted; starting a replacement", name)
        except BaseException:
            self._dead.put_nowait(name)  # try the eviction again next step
            raise
        self._reported.discard(name)

    async def _grant_grace(self, name: str) -> bool:
        """Whether a DOWN replica waits for ``rise`` instead of being replaced now."""
        if name in self.waiting:
            return True
        if self._replace_after_s <= 0 or self._is_running is None:
            return False
        try:
            running = await self._is_running(name)
        except LBError as exc:
            log.warning("cannot tell whether %s still runs (%s); replacing it", name, exc)
            return False
        if not running:
            return False  # its process or container is gone: nothing to wait for
        self.waiting[name] = self._now() + self._replace_after_s
        log.warning(
            "replica %s is DOWN but still running; replacing it in %.1fs unless it recovers",
            name,
            self._replace_after_s,
        )
        return True

    def _overdue(self) -> list[str]:
        now = self._now()
        return [name for name, at in self.waiting.items() if at <= now]

    def _next_wait_s(self) -> float:
        if not self.waiting:
            return self._resync_s
        return max(0.0, min(self._resync_s, min(self.waiting.values()) - self._now()))

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def _owed(self) -> int:
        membership = await self._store.membership()
        if membership.target is None:
            return 0
        return max(0, membership.target - len(membership.replicas))

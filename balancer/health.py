"""Active health checks: ``GET /heartbeat`` on every ring member, on an interval.

Owns ``probe``, ``wait_ready`` and ``HealthMonitor``. A passed probe writes the replica's
liveness to the store with a TTL long enough to survive ``fails - 1`` missed probes; the
``fails``-th consecutive failure drops the liveness at once and reports the replica dead, so
detection takes about ``fails × interval`` seconds rather than a TTL plus a poll.
Must not import: redis, docker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp

from balancer.errors import SpawnTimeout, StoreUnavailable
from balancer.membership import RingView
from balancer.store import Store

log = logging.getLogger(__name__)

OnDead = Callable[[str], Awaitable[None]]


async def probe(session: aiohttp.ClientSession, address: str, timeout_s: float) -> bool:
    """True when ``http://address/heartbeat`` answers 200 within ``timeout_s``."""
    try:
        async with session.get(
            f"http://{address}/heartbeat", timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            await resp.read()
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def wait_ready(
    session: aiohttp.ClientSession, address: str, timeout_s: float, *, every_s: float = 0.05
) -> None:
    """Wait until ``address`` passes its first heartbeat.

    Raises:
        SpawnTimeout: when it has not passed one within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SpawnTimeout(f"replica at {address} did not pass a heartbeat in {timeout_s}s")
        if await probe(session, address, min(remaining, 1.0)):
            return
        await asyncio.sleep(min(every_s, max(0.0, deadline - time.monotonic())))


class HealthMonitor:
    """Probes every member of the current ring each ``interval_s``."""

    def __init__(
        self,
        store: Store,
        view: RingView,
        session: aiohttp.ClientSession,
        on_dead: OnDead,
        *,
        interval_s: float,
        timeout_s: float,
        fails: int,
    ) -> None:
        self._store = store
        self._view = view
        self._session = session
        self._on_dead = on_dead
        self._interval_s = interval_s
        self._timeout_s = min(timeout_s, interval_s)
        self._fails = fails
        self.ttl_s = interval_s * fails + self._timeout_s
        self.failures: dict[str, int] = {}

    async def run(self) -> None:
        """Probe forever; a failing round is logged and the next one still runs."""
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                log.warning("health check round: %s", exc)
            except Exception:
                log.exception("health check round failed")
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, self._interval_s - elapsed))

    async def check_once(self) -> None:
        """Probe every current member once, concurrently, and act on the results."""
        addresses = dict(self._view.current.addresses)
        names = list(addresses)
        results = await asyncio.gather(
            *(probe(self._session, addresses[n], self._timeout_s) for n in names)
        )
        for name in set(self.failures) - set(names):
            del self.failures[name]  # no longer a member: forget its history
        for name, ok in zip(names, results, strict=True):
            await self._record(name, ok)

    async def _record(self, name: str, ok: bool) -> None:
        if ok:
            self.failures[name] = 0
            await self._store.mark_alive(name, self.ttl_s)
            return
        count = self.failures.get(name, 0) + 1
        self.failures[name] = count
        log.warning("heartbeat of %s failed (%d/%d)", name, count, self._fails)
        if count >= self._fails:  # repeated while it stays a member; the supervisor dedups
            await self._store.mark_dead(name)
            await self._on_dead(name)

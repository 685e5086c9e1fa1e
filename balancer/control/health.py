"""Active health checks: a ``GET`` (``/heartbeat``) on every ring member, on a jittered interval.

Owns ``HealthCheck`` (what a probe asks and which statuses pass it: by default the contract's
``/heartbeat`` answering 200; ``health_path`` and ``health_status`` can point it at a check that
exercises what requests need, HAProxy's ``option httpchk`` with ``http-check expect status``),
``probe``, ``wait_ready`` and ``HealthMonitor``, with HAProxy's rise/fall semantics: a
replica is UP until ``fall`` consecutive probes fail, then DOWN until ``rise`` consecutive probes
pass. While UP, a passed probe writes its liveness to the store with a TTL long enough to survive
``fall - 1`` missed probes; going DOWN drops the liveness at once and records when
(``down_since``), so detection takes about ``fall × interval`` seconds rather than a TTL plus a
poll. Coming back UP writes the liveness again. Either change wakes the leader's reconciler
(``on_change``), which reads ``down_since`` and decides; the monitor decides nothing itself.
Rounds are spaced by ``interval × (1 ± jitter)``.
Must not import: redis, docker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from balancer.errors import SpawnTimeout, StoreUnavailable
from balancer.http.upstream import local_failure
from balancer.state.store import LivenessStore
from balancer.state.view import RingView

if TYPE_CHECKING:
    from balancer.sections import HealthSettings

log = logging.getLogger(__name__)

OnChange = Callable[[], None]


@dataclass(frozen=True)
class HealthCheck:
    """What a probe GETs (path and query, validated by ``HealthSettings``: it goes into a request
    line as is) and the statuses that pass it (a redirect is not followed)."""

    path: str = "/heartbeat"
    statuses: frozenset[int] = frozenset({200})


HEARTBEAT = HealthCheck()  # the contract's check


def health_check(s: HealthSettings) -> HealthCheck:
    """The health check ``s`` configures."""
    return HealthCheck(s.path, s.status_set)


async def probe(
    session: aiohttp.ClientSession, address: str, timeout_s: float, check: HealthCheck = HEARTBEAT
) -> bool | None:
    """True when ``GET http://address<check.path>`` answers one of ``check.statuses`` within
    ``timeout_s``; None when the balancer could not even try (``local_failure``: out of
    descriptors), which is no evidence either way."""
    try:
        async with session.get(
            URL(f"http://{address}{check.path}", encoded=True),  # sent as configured
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            await resp.read()
            return resp.status in check.statuses
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return None if local_failure(exc) else False


async def wait_ready(
    session: aiohttp.ClientSession,
    address: str,
    timeout_s: float,
    *,
    every_s: float = 0.05,
    check: HealthCheck = HEARTBEAT,
) -> None:
    """Wait until ``address`` passes its first health check.

    Raises:
        SpawnTimeout: when it has not passed one within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SpawnTimeout(f"replica at {address} did not pass a heartbeat in {timeout_s}s")
        if await probe(session, address, min(remaining, 1.0), check):
            return
        await asyncio.sleep(min(every_s, max(0.0, deadline - time.monotonic())))


class HealthMonitor:
    """Probes every member of the current ring each ``interval_s``."""

    def __init__(
        self,
        store: LivenessStore,
        view: RingView,
        session: aiohttp.ClientSession,
        settings: HealthSettings,
        *,
        on_change: OnChange | None = None,
        rng: random.Random | None = None,
        check: HealthCheck | None = None,
    ) -> None:
        """``settings``: interval, timeout, ``fails`` (HAProxy's ``fall``), ``rise``, jitter (a
        fraction of the interval, 0..0.5) and, unless ``check`` replaces it, the check."""
        self._store = store
        self._view = view
        self._session = session
        self._on_change = on_change
        self._interval_s = settings.interval_s
        self._timeout_s = settings.probe_timeout_s
        self._fails = settings.fails
        self._rise = settings.rise
        self._jitter = settings.jitter
        self._rng = rng or random.Random()
        self._check = check or health_check(settings)
        self.ttl_s = settings.alive_ttl_s
        self.failures: dict[str, int] = {}  # consecutive failed probes
        self.passes: dict[str, int] = {}  # consecutive passed probes of a DOWN replica
        self.down_since: dict[str, float] = {}  # DOWN members → time.monotonic() it went DOWN
        # name → time.monotonic() of its last passed probe in the current term (for metrics)
        self.passed_at: dict[str, float] = {}

    async def run(self) -> None:
        """Probe forever; a failing round is logged and the next one still runs."""
        self.passed_at.clear()  # a new term: only its own probes count
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
            await asyncio.sleep(max(0.0, self.next_interval_s() - elapsed))

    def next_interval_s(self) -> float:
        """The gap before the next round: the interval, spread by the jitter."""
        return self._interval_s * (1 + self._jitter * self._rng.uniform(-1.0, 1.0))

    def alive(self, name: str) -> bool | None:
        """Whether ``name`` counts as alive by this term's probes: it passed one and is UP (not
        DOWN after ``fails`` failures in a row, or UP again after ``rise`` passes), which its
        liveness key in the store says too. None until one of its probes passed this term."""
        if name not in self.passed_at:
            return None
        return name not in self.down_since

    async def check_once(self) -> None:
        """Probe every current member once, concurrently, and act on the results."""
        addresses = dict(self._view.current.addresses)
        names = list(addresses)
        results = await asyncio.gather(
            *(probe(self._session, addresses[n], self._timeout_s, self._check) for n in names)
        )
        for gone in set(self.failures) - set(names):  # no longer a member: forget its history
            self.failures.pop(gone, None)
            self.passes.pop(gone, None)
            self.down_since.pop(gone, None)
        for name in set(self.passed_at) - set(names):
            del self.passed_at[name]
        for name, ok in zip(names, results, strict=True):
            await self._record(name, ok)

    async def _record(self, name: str, ok: bool | None) -> None:
        if ok is None:  # the balancer is out of descriptors: it must not conclude anything
            log.warning("health check of %s not run: the balancer is out of resources", name)
            if name not in self.down_since and name in self.passed_at:
                await self._store.mark_alive(name, self.ttl_s)  # as it was: UP
            return
        if ok:
            self.failures[name] = 0
            self.passed_at[name] = time.monotonic()
            if name in self.down_since:
                self.passes[name] = self.passes.get(name, 0) + 1
                if self.passes[name] < self._rise:
                    return
                del self.down_since[name]
                log.warning("replica %s is UP again after %d passed probes", name, self._rise)
                await self._store.mark_alive(name, self.ttl_s)
                self._changed()
                return
            await self._store.mark_alive(name, self.ttl_s)
            return
        self.passes[name] = 0
        count = self.failures.get(name, 0) + 1
        self.failures[name] = count
        log.warning("health check of %s failed (%d/%d)", name, count, self._fails)
        if count >= self._fails:
            if name not in self.down_since:
                self.down_since[name] = time.monotonic()
                self._changed()  # before the store write: the reconciler need not wait for it
            await self._store.mark_dead(name)  # every round while DOWN: a lost write is redone

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

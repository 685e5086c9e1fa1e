"""The ring every request is routed on: one immutable snapshot, rebuilt from the store.

Owns ``Snapshot`` and ``RingView``. A snapshot is built only from (epoch, member set, ring
settings); a change builds a new snapshot and swaps the reference, so a request in flight keeps
the snapshot it started with and never sees a half-built ring. The view reloads on a store change
hint and on a timer, because hints can be lost. Epochs only move forward: a store whose epoch went
back lost its data (a Redis restart without persistence), and the view keeps routing on its
newer ring until the leader writes it back (``ReplicaManager.restore``).
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import xxhash

from balancer.errors import StoreUnavailable
from balancer.hashing import Ring, RingSettings, build_ring
from balancer.hashing.picker import Picker
from balancer.state.store import Membership, MembershipSource

log = logging.getLogger(__name__)

_FINGERPRINT_KEYS = [f"fingerprint-{i}" for i in range(256)]


@dataclass(frozen=True)
class Snapshot:
    """What routing needs at one epoch: the ring, the settings it was built with (the shared
    ones once stored, else this instance's) and where each member listens."""

    membership: Membership
    ring: Ring
    addresses: dict[str, str] = field(hash=False)
    settings: RingSettings = field(default_factory=RingSettings)

    @property
    def epoch(self) -> int:
        return self.membership.epoch

    @functools.cached_property
    def picker(self) -> Picker:
        """The walk over a key's candidates on this ring (``balancer.hashing.picker``)."""
        return Picker(self.ring)

    @functools.cached_property
    def _fingerprint(self) -> str:
        if not self.ring.members:
            return "empty"
        owners = "|".join(self.ring.lookup(k) for k in _FINGERPRINT_KEYS)
        state = self.membership.ring_state  # the whole slot table, where the algorithm has one
        text = f"{','.join(self.ring.members)}/{owners}/{state}"
        return xxhash.xxh3_64_hexdigest(text.encode())

    def fingerprint(self) -> str:
        """A short digest of the built ring's answers, equal on instances that agree."""
        return self._fingerprint


def build_snapshot(membership: Membership, settings: RingSettings) -> Snapshot:
    """The snapshot of ``membership``; ``settings`` apply only while it stores none."""
    effective = membership.settings or settings
    ring = build_ring(membership.members(), effective, membership.ring_state)
    addresses = {r.name: r.address for r in membership.replicas}
    return Snapshot(membership, ring, addresses, effective)


def _prepared(membership: Membership, settings: RingSettings) -> Snapshot:
    """``build_snapshot`` with its picker and fingerprint computed: run in a thread, because a
    ring costs ~13 ms of CPU to build (slots, 160 points per weight), which on the loop would
    stall every connection this instance serves, on every change."""
    snapshot = build_snapshot(membership, settings)
    snapshot.fingerprint()
    snapshot.picker  # noqa: B018  # computed here, not by the first request after the swap
    return snapshot


class RingView:
    """Holds the current snapshot and keeps it in step with the store."""

    def __init__(
        self, store: MembershipSource, settings: RingSettings, *, resync_s: float = 5.0
    ) -> None:
        self._store = store
        self._settings = settings
        self._resync_s = resync_s
        self.current = build_snapshot(Membership(), settings)
        self._refreshing = asyncio.Lock()
        self._swapped = asyncio.Condition()
        self.lost_epoch: int | None = None  # the store's epoch, while it is behind ours
        self.listeners: list[Callable[[Snapshot, Snapshot], None]] = []  # (old, new) on a swap

    async def refresh(self) -> Snapshot:
        """Reload membership and swap in a new snapshot if the epoch moved.

        Refreshes run one at a time, so a slow reload can never swap in an older epoch after a
        faster one swapped in a newer one.
        """
        async with self._refreshing:
            return await self._reload()

    async def _reload(self) -> Snapshot:
        membership = await self._store.membership()
        if membership.epoch < self.current.epoch:
            if self.lost_epoch != membership.epoch:
                log.warning(
                    "the store went back from epoch %d to %d (its data was lost); routing on "
                    "epoch %d until the leader restores it",
                    self.current.epoch,
                    membership.epoch,
                    self.current.epoch,
                )
            self.lost_epoch = membership.epoch
        elif membership.epoch != self.current.epoch:
            self.lost_epoch = None
            built = await asyncio.to_thread(_prepared, membership, self._settings)
            if built.epoch <= self.current.epoch:  # refreshes are serialised: never, but a
                return self.current  # swap must not go back if that ever changes
            old, self.current = self.current, built
            for listener in self.listeners:
                listener(old, self.current)
            async with self._swapped:
                self._swapped.notify_all()
            log.info(
                "ring rebuilt: epoch=%d members=%d fingerprint=%s",
                membership.epoch,
                len(membership.replicas),
                self.current.fingerprint(),
            )
        return self.current

    async def wait_for_change(self, epoch: int, timeout_s: float) -> None:
        """Return once the current snapshot's epoch differs from ``epoch``, or after the timeout."""
        async with self._swapped:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._swapped.wait_for(lambda: self.current.epoch != epoch)

    async def watch(self) -> None:
        """Refresh on every change hint and at least every ``resync_s`` seconds; runs forever.

        An unreachable store is retried every second but logged once, then every 30 tries.
        """
        down = 0
        while True:
            try:
                await self._store.wait_for_change(self.current.epoch, self._resync_s)
                await self.refresh()
                if down:
                    log.info("store reachable again after %d failed refreshes", down)
                down = 0
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                if down % 30 == 0:
                    log.warning("%s; routing on epoch %d until it is back", exc, self.current.epoch)
                down += 1
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("ring refresh failed; keeping epoch %d", self.current.epoch)
                await asyncio.sleep(1.0)

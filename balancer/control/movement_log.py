"""Movement accounting: what every membership change moved, logged in the shared store.

Owns ``MovementLog``. The leader's manager reports each committed change (its kind and the
membership before and after). Off the event loop, the log builds both rings and measures the
share of the hash space that changed owner (exact for slot tables, Maglev and ketama rings;
sampled for the others, see ``balancer.hashing.movement``), the ideal share for the same change
of weights and their ratio; it appends the event to the store's bounded list (every instance's
``GET /lb/events`` reads it) and keeps counters for this instance's metrics.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from balancer.errors import StoreUnavailable
from balancer.hashing import RingSettings, build_ring
from balancer.hashing.movement import ideal_share, moved_share
from balancer.state.store import EventLog, Membership

log = logging.getLogger(__name__)

KEEP_EVENTS = 200  # events kept in the store
_BACKLOG = 1000  # changes waiting to be measured; more are dropped (and logged)
_SAMPLE_KEYS = 16_384  # keys sampled for algorithms without an exact comparison


class MovementLog:
    """Measures and records committed changes, in commit order (see the module docstring)."""

    def __init__(
        self,
        store: EventLog,
        settings: RingSettings,
        *,
        wall_clock: Callable[[], float] = time.time,
        keep: int = KEEP_EVENTS,
    ) -> None:
        """``settings``: this instance's own, for documents that store none."""
        self._store = store
        self._settings = settings
        self._wall_clock = wall_clock
        self._keep = keep
        self._queue: asyncio.Queue[tuple[str, Membership, Membership]] = asyncio.Queue(_BACKLOG)
        self.counts: collections.Counter[str] = collections.Counter()  # events by kind
        self.moved_total = 0.0  # sum of the moved shares of every event measured here
        self.last: dict[str, Any] | None = None

    def committed(self, kind: str, before: Membership, after: Membership) -> None:
        """Queue a committed change for measuring (called by the manager, never blocks)."""
        try:
            self._queue.put_nowait((kind, before, after))
        except asyncio.QueueFull:
            log.warning(
                "movement log: %d changes waiting; epoch %d not measured", _BACKLOG, after.epoch
            )

    async def run(self) -> None:
        """Measure and record queued changes until cancelled."""
        while True:
            kind, before, after = await self._queue.get()
            try:
                event = await asyncio.to_thread(self.measure, kind, before, after)
            except Exception:
                log.exception("movement log: measuring epoch %d failed", after.epoch)
                continue
            self.counts[kind] += 1
            self.moved_total += event["moved_share"]
            self.last = event
            try:
                await self._store.record_event(event, self._keep)
            except StoreUnavailable as exc:
                log.warning("movement log: epoch %d not stored (%s)", after.epoch, exc)

    def measure(self, kind: str, before: Membership, after: Membership) -> dict[str, Any]:
        """The event of one change (pure apart from the wall clock; runs in a thread)."""
        old_settings = before.settings or self._settings
        new_settings = after.settings or self._settings
        old = build_ring(before.members(), old_settings, before.ring_state)
        new = build_ring(after.members(), new_settings, after.ring_state)
        same_hash = (old_settings.hash_name, old_settings.hash_seed) == (
            new_settings.hash_name,
            new_settings.hash_seed,
        )
        moved = moved_share(old, new, same_hash=same_hash, sample=_SAMPLE_KEYS)
        ideal = ideal_share(before.members(), after.members())
        names_before, names_after = set(before.names), set(after.names)
        return {
            "epoch": after.epoch,
            "time": round(self._wall_clock(), 3),
            "kind": kind,
            "algorithm": new_settings.algorithm,
            "replicas_before": len(old.members),
            "replicas_after": len(new.members),
            "added": sorted(names_after - names_before),
            "removed": sorted(names_before - names_after),
            "moved_share": round(moved, 6),
            "ideal_share": round(ideal, 6),
            "excess": round(moved / ideal, 4) if ideal > 0 else None,
        }

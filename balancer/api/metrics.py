"""Prometheus exposition of the balancer's counters and of what this instance knows.

Owns ``TrafficCollector`` (a custom collector that reads ``TrafficStats``, the ring view and
``Liveness`` at scrape time, so the data path never calls a labelled metric and a scrape does no
I/O), ``Liveness`` and ``metrics_handler``. Everything lives on the registry the caller passes
(one per ``BalancerService``), never on prometheus_client's global one.
Label sets are bounded: replicas of the current ring, plus the replicas that left it in the
last ``linger_s`` (at most ``max_departed``: ``balancer.api.replica_series`` says which series
linger and why), status classes and fixed lists of error kinds and codes, each exported at 0
from the start.

Besides the traffic counters (``lb_upstream_*``, ``lb_bounded_load_spills_total``,
``lb_balancer_errors_total{code}``, every code of ``BALANCER_ERROR_CODES`` from the start,
``lb_client_connections``) and ``lb_ring_epoch``/``lb_ring_members``:
  - ``lb_replica_up{replica}`` 1/0: the replica counts as alive. On the leader, by its own probes
    (``HealthMonitor.alive``: passed one this term and is UP by rise/fall); elsewhere, and on a
    leader for a replica its probes have not passed yet, whether the store holds the replica's
    liveness key (written by the leader's probes), as read by the announcer loop once a second.
    Absent while that is unknown (store unreadable, or not read yet).
  - ``lb_replica_heartbeat_age_seconds{replica}``: seconds since the last passed probe, only on
    the instance that probes (the leader), only for replicas that passed one this term.
  - ``lb_ring_info{algorithm,fingerprint}`` 1: the ring in use (the fingerprint equals on
    instances that route alike).
  - ``lb_leader`` 1/0: this instance is the leader.
  - ``lb_replicas_desired``: N, the replicas the leader keeps running (the stored target, which
    ``/add`` and ``/rm`` move and a failure does not), as of the ring in use. Absent while
    unknown: before the first leader booted the replicas, and with replicas another system
    runs (``--runtime dns``: that system decides how many).
  - ``lb_state_store_up`` 1/0: the announcer loop's last round trip to the store (this
    instance's announcement, and the liveness read where it made one) succeeded, once a second.
    Absent until the first round ends. The data path keeps routing on its last ring while it is
    0, but nothing changes the ring and no leader can hold its lease.
  - ``lb_replica_keyspace_share{replica}``: each member's share of the key space
    (``balancer.hashing.arcs.shares``; 0 for a drained member), computed once per ring in a
    worker thread (``KeyspaceShares``), so absent for a moment after every ring change (and
    on the first scrape); an instance nobody scrapes never computes it.
  - ``lb_replica_weight{replica}``: each member's weight.
  - ``lb_load_peak_to_mean``: max / mean of the requests completed by each key-owning member
    (weight > 0) since this instance began routing on the current ring (its epoch), counted
    across this instance's worker processes; 1 is perfectly even. Absent until one such request
    completed. It compares raw counts, so with unequal weights it is above 1 by design: compare
    ``lb_replica_keyspace_share`` with each replica's share of the request rate instead.
Must not import: redis, docker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from balancer.api.replica_series import Departures, replica_families
from balancer.control.health import HealthMonitor
from balancer.control.movement_log import MovementLog
from balancer.errors import StoreUnavailable
from balancer.hashing import Ring
from balancer.hashing.arcs import shares
from balancer.http.stats import BALANCER_ERROR_CODES, TrafficStats, merged
from balancer.state.coordination import Leadership, SoloLeadership
from balancer.state.store import LivenessStore
from balancer.state.view import RingView, Snapshot

log = logging.getLogger(__name__)


class Liveness:
    """Replica liveness as this instance knows it, readable without I/O (see the module
    docstring): the leader's ``HealthMonitor`` while this instance leads, else the store's
    liveness keys as last read by ``refresh``."""

    def __init__(
        self, view: RingView, leadership: Leadership, monitor: HealthMonitor | None = None
    ) -> None:
        self._view = view
        self._leadership = leadership
        self._monitor = monitor
        # The store's liveness keys; None: unknown (not read yet, or the store is unreachable).
        self.stored: frozenset[str] | None = None
        # The announcer loop's last round trip to the store succeeded; None: none ended yet.
        self.store_up: bool | None = None

    @property
    def is_leader(self) -> bool:
        return self._leadership.is_leader

    def _probing(self) -> HealthMonitor | None:
        return self._monitor if self._leadership.is_leader else None

    def up(self, name: str) -> bool | None:
        monitor = self._probing()
        probed = monitor.alive(name) if monitor is not None else None
        if probed is not None:
            return probed
        return None if self.stored is None else name in self.stored

    def heartbeat_age_s(self, name: str, now: float) -> float | None:
        monitor = self._probing()
        passed = monitor.passed_at.get(name) if monitor is not None else None
        return None if passed is None else max(0.0, now - passed)

    async def refresh(self, store: LivenessStore) -> bool:
        """Re-read the store's liveness keys, unless this instance's own probes cover every
        member (the leader in a steady state needs no round trip). Never raises for an
        unreachable store: liveness becomes unknown instead.

        Returns:
            False if the store could not be read, else True (also when it was not read).
        """
        monitor = self._probing()
        names = self._view.current.addresses
        if monitor is not None and all(n in monitor.passed_at for n in names):
            self.stored = None  # not read now: a member that joins later is unknown, not down
            return True
        try:
            self.stored = await store.alive()
        except StoreUnavailable:
            self.stored = None
            return False
        return True


class KeyspaceShares:
    """The key-space shares of the ring in use, computed once per ring off the event loop:
    ``shares`` samples thousands of keys for some algorithms (rendezvous over 20 replicas takes
    about 0.4 s), which would stall the data path if a scrape computed it inline."""

    def __init__(self) -> None:
        self._ring: Ring | None = None
        self._shares: dict[str, float] | None = None

    def get(self, ring: Ring) -> dict[str, float] | None:
        """``ring``'s shares, or None while they are being computed."""
        if ring is not self._ring:
            self.start(ring)
        return self._shares

    def start(self, ring: Ring) -> None:
        """Compute ``ring``'s shares in the running loop's default executor (without a running
        loop: here and now)."""
        self._ring, self._shares = ring, None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._shares = shares(ring)
            return
        future = loop.run_in_executor(None, shares, ring)
        future.add_done_callback(partial(self._done, ring))

    def _done(self, ring: Ring, future: asyncio.Future[dict[str, float]]) -> None:
        if future.cancelled() or ring is not self._ring:
            return  # a newer ring is in use already
        error = future.exception()
        if error is not None:
            log.error("key-space shares of the ring failed: %r", error)
            return
        self._shares = future.result()


class TrafficCollector(Collector):
    """Every ``lb_*`` metric, read from ``stats``, ``view`` and ``liveness`` at scrape time.

    Args:
        linger_s: how long a replica that left the ring keeps its counters exported; at most
            ``stats.linger_s`` (its default), which keeps them.
        max_departed: the most departed replicas exported; at most ``stats.max_departed`` (its
            default).
        clock: seconds, monotonic, for the lingers.

    Raises:
        ValueError: ``linger_s`` or ``max_departed`` above what ``stats`` keeps.
    """

    def __init__(
        self,
        stats: TrafficStats,
        view: RingView,
        liveness: Liveness | None = None,
        movement: MovementLog | None = None,
        *,
        linger_s: float | None = None,
        max_departed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        linger_s = stats.linger_s if linger_s is None else linger_s
        max_departed = stats.max_departed if max_departed is None else max_departed
        if linger_s > stats.linger_s or max_departed > stats.max_departed:
            raise ValueError("a departed replica cannot be exported longer than stats keep it")
        self._departures = Departures(linger_s, max_departed, clock)
        self._stats = stats
        self._view = view
        self._movement = movement
        # Without one (a collector on its own, in tests): the only instance, hence the leader,
        # that knows nothing about liveness.
        self._liveness = liveness or Liveness(view, SoloLeadership())
        self._keyspace = KeyspaceShares()
        self._scraped = False
        # Requests completed per replica when this instance swapped in the current ring.
        self._epoch_base: dict[str, int] = {}
        view.listeners.append(self._on_ring_swap)

    def _on_ring_swap(self, old: Snapshot, new: Snapshot) -> None:
        self._departures.swapped(old.addresses, new.addresses)
        replicas = merged(self._stats)["replicas"]
        self._epoch_base = {name: replicas[name]["requests"] for name in replicas}
        if self._scraped:  # someone is watching: have the shares ready for the next scrape
            self._keyspace.start(new.ring)

    def collect(self) -> Iterator[Metric]:
        self._scraped = True
        total = merged(self._stats)  # this process plus its workers' latest reports
        snapshot = self._view.current  # collect() never awaits: one snapshot throughout
        yield from self._ring(snapshot)
        yield from self._members(snapshot, total["replicas"])
        exported = sorted(snapshot.addresses) + self._departures.names()
        yield from replica_families(total["replicas"], exported)
        yield from self._resilience(total, snapshot)
        if self._movement is not None:
            yield from self._changes(self._movement)
        connections = GaugeMetricFamily(
            "lb_client_connections", "Open client connections to this balancer instance"
        )
        connections.add_metric([], total["client_connections"])
        yield connections
        refused = CounterMetricFamily(
            "lb_refused_connections",
            "Client connections closed at once because the process held max_connections",
        )
        refused.add_metric([], total["refused_connections"])
        yield refused
        answered = CounterMetricFamily(
            "lb_balancer_errors",
            "Error responses generated by the balancer itself",
            labels=["code"],
        )
        codes = {**dict.fromkeys(BALANCER_ERROR_CODES, 0), **total["client_errors"]}
        for code, count in sorted(codes.items()):
            answered.add_metric([code], count)
        yield answered

    @staticmethod
    def _changes(movement: MovementLog) -> Iterator[Metric]:
        """Membership changes this instance measured (the leader measures every one)."""
        events = CounterMetricFamily(
            "lb_scale_events", "Membership changes measured here, by kind", labels=["kind"]
        )
        for kind, count in sorted(movement.counts.items()):
            events.add_metric([kind], count)
        moved = CounterMetricFamily(
            "lb_ring_moved_share",
            "Sum over measured changes of the share of the hash space that changed owner",
        )
        moved.add_metric([], movement.moved_total)
        yield from (events, moved)
        if movement.last is not None:
            last = GaugeMetricFamily(
                "lb_ring_last_moved_share", "Share of the hash space the last change moved"
            )
            last.add_metric([], movement.last["moved_share"])
            ideal = GaugeMetricFamily(
                "lb_ring_last_ideal_share",
                "The least any algorithm could have moved for the last change",
            )
            ideal.add_metric([], movement.last["ideal_share"])
            yield from (last, ideal)

    def _ring(self, snapshot: Snapshot) -> Iterator[Metric]:
        epoch = GaugeMetricFamily("lb_ring_epoch", "Membership epoch of the ring in use")
        epoch.add_metric([], snapshot.epoch)
        members = GaugeMetricFamily("lb_ring_members", "Replicas in the ring in use")
        members.add_metric([], len(snapshot.membership.replicas))
        info = GaugeMetricFamily(
            "lb_ring_info",
            "The ring in use: its algorithm and fingerprint (equal on instances that agree)",
            labels=["algorithm", "fingerprint"],
        )
        info.add_metric([snapshot.settings.algorithm, snapshot.fingerprint()], 1)
        leader = GaugeMetricFamily("lb_leader", "1 while this instance is the leader")
        leader.add_metric([], 1 if self._liveness.is_leader else 0)
        desired = GaugeMetricFamily(
            "lb_replicas_desired", "N, the replicas the leader keeps running (the stored target)"
        )
        if snapshot.membership.target is not None:
            desired.add_metric([], snapshot.membership.target)
        store_up = GaugeMetricFamily(
            "lb_state_store_up", "1 while this instance's last round trip to the store succeeded"
        )
        if self._liveness.store_up is not None:
            store_up.add_metric([], 1 if self._liveness.store_up else 0)
        yield from (epoch, members, info, leader, desired, store_up)

    def _members(self, snapshot: Snapshot, replicas: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        """Per-member gauges of the ring in use: liveness, weight, key-space share, and the
        peak-to-mean of the requests each key owner completed since the ring was swapped in."""
        up = GaugeMetricFamily(
            "lb_replica_up",
            "1 while the replica counts as alive as this instance knows it (the leader's probes, "
            "else the store's liveness keys)",
            labels=["replica"],
        )
        age = GaugeMetricFamily(
            "lb_replica_heartbeat_age_seconds",
            "Seconds since the replica last passed a heartbeat probe (only on the instance "
            "that probes)",
            labels=["replica"],
        )
        weight = GaugeMetricFamily("lb_replica_weight", "Weight of the replica", labels=["replica"])
        share = GaugeMetricFamily(
            "lb_replica_keyspace_share",
            "Share of the key space the ring in use gives the replica",
            labels=["replica"],
        )
        keyspace = self._keyspace.get(snapshot.ring)
        now = time.monotonic()
        for r in snapshot.membership.replicas:
            weight.add_metric([r.name], r.weight)
            if keyspace is not None:
                share.add_metric([r.name], keyspace.get(r.name, 0.0))
            alive = self._liveness.up(r.name)
            if alive is not None:
                up.add_metric([r.name], 1 if alive else 0)
            seconds = self._liveness.heartbeat_age_s(r.name, now)
            if seconds is not None:
                age.add_metric([r.name], seconds)
        peak = GaugeMetricFamily(
            "lb_load_peak_to_mean",
            "Max / mean of the requests each key-owning replica completed since this instance "
            "began routing on the current ring (1 = perfectly even)",
        )
        loads = [
            max(0, (replicas[n]["requests"] if n in replicas else 0) - self._epoch_base.get(n, 0))
            for n in snapshot.ring.members
        ]
        if loads and sum(loads) > 0:
            peak.add_metric([], max(loads) * len(loads) / sum(loads))
        yield from (up, age, weight, share, peak)

    def _resilience(self, total: dict[str, Any], snapshot: Snapshot) -> Iterator[Metric]:
        """Retry budget and outlier ejection (``balancer.http.choice``, ``.outlier``); the
        ejection counter is with the other per-replica counters (``replica_families``)."""
        exhausted = CounterMetricFamily(
            "lb_retry_budget_exhausted",
            "Retries not made because the retry budget was exhausted (the failure was answered)",
        )
        exhausted.add_metric([], total.get("retry_budget_exhausted", 0))
        ejected = GaugeMetricFamily(
            "lb_replica_ejected",
            "1 while outlier detection ejects the replica (with workers: processes ejecting it)",
            labels=["replica"],
        )
        replicas = total["replicas"]
        for name in sorted(snapshot.addresses):
            ejected.add_metric([name], replicas[name].get("ejected", 0) if name in replicas else 0)
        yield from (exhausted, ejected)


def metrics_handler(
    registry: CollectorRegistry,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return handler

"""Per-replica traffic counters, cheap enough to update on every request.

Owns ``ReplicaStats`` and ``TrafficStats``: plain Python integers and floats updated in place on
the data path; ``balancer.api.metrics`` turns them into Prometheus samples only when scraped, so a
request costs a few attribute increments instead of labelled metric calls.

A replica that leaves the ring keeps its counters for ``DEPARTED_LINGER_S`` (at most
``DEPARTED_MAX`` departed replicas, the oldest forgotten first): the errors and retries a killed
replica caused happen in the second before it leaves, and a Prometheus scraping every 15-60 s
must still find them (``TrafficCollector`` exports them as long). Forgetting happens on ring
swaps and snapshots (a scrape, a worker's report), never per request.
Must not import: asyncio, aiohttp, prometheus_client, redis, docker.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

# Upper bounds (seconds) of the latency histogram buckets; +Inf is implicit.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
ERROR_KINDS = ("connect", "timeout", "reset", "protocol")
# Every status the balancer answers itself (``TrafficStats.client_error``): malformed requests
# (400, 414 target too long, 431 head too large, 501 unknown transfer coding), 408 (client too
# slow), and 502/503/504 when no replica could answer. Exported at 0 from the start.
BALANCER_ERROR_CODES = ("400", "408", "414", "431", "501", "502", "503", "504")
# How long a replica that left the ring keeps its counters, and how many such replicas are kept
# at most. 300 s: Prometheus' own lookback (staleness) is 5 minutes, so a scrape interval it
# supports (up to ~2 min) scrapes the final values at least twice, a missed scrape included.
# 64: the default --max-replicas, so a whole default fleet removed at once lingers entirely.
DEPARTED_LINGER_S = 300.0
DEPARTED_MAX = 64


class ReplicaStats:
    """Counters of one replica (by name)."""

    __slots__ = (
        "buckets",
        "by_class",
        "connecting",
        "ejected",
        "ejections",
        "errors",
        "in_flight",
        "latency_sum_s",
        "requests",
        "retries",
        "spills",
    )

    def __init__(self) -> None:
        self.requests = 0  # completed responses
        self.by_class = [0, 0, 0, 0, 0, 0]  # index = status // 100 (0 unused)
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.retries = 0
        self.in_flight = 0  # requests sent on a connection, response not complete
        self.connecting = 0  # requests waiting for a new connection to this replica
        self.spills = 0  # requests this replica owned that bounded loads sent elsewhere
        self.ejections = 0  # times outlier detection ejected it (balancer.http.outlier)
        self.ejected = 0  # 1 while ejected (reset by the sweeper within 0.25 s of the end)
        self.latency_sum_s = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)

    def record(self, status: int, latency_s: float) -> None:
        self.requests += 1
        self.by_class[min(status // 100, 5)] += 1
        self.latency_sum_s += latency_s
        self.buckets[bisect_left(LATENCY_BUCKETS_S, latency_s)] += 1


class TrafficStats:
    """Everything the data path counts; one instance per balancer process.

    Args:
        linger_s: how long a replica that left the ring keeps its counters.
        max_departed: the most departed replicas kept (the oldest departures go first).
        clock: seconds, monotonic.
    """

    def __init__(
        self,
        *,
        linger_s: float = DEPARTED_LINGER_S,
        max_departed: int = DEPARTED_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.linger_s = linger_s
        self.max_departed = max_departed
        self._clock = clock
        self.replicas: dict[str, ReplicaStats] = {}
        # Replicas with counters here that left the ring → when (first departure first).
        self.departed: dict[str, float] = {}
        self.client_connections = 0
        self.refused_connections = 0  # closed at once: the process held max_connections
        self.client_errors: dict[str, int] = {}  # 400, 431, 408, … answered by the balancer
        self.no_replica = 0  # 503: empty ring
        # Σ in_flight + connecting over every ReplicaStats of this process, the admin route's
        # too: the total of the bounded-load cap, kept as a counter so no request has to sum.
        self.load = 0
        # Retries: requests on a retry attempt now (the retry budget's numerator), its peak,
        # and retries refused because the budget was exhausted.
        self.retries_in_flight = 0
        self.retries_in_flight_peak = 0
        self.retry_budget_exhausted = 0
        self.remote: dict[str, dict[str, Any]] = {}  # worker id → its latest snapshot

    def replica(self, name: str) -> ReplicaStats:
        stats = self.replicas.get(name)
        if stats is None:
            stats = self.replicas[name] = ReplicaStats()
        return stats

    def client_error(self, status: int) -> None:
        key = str(status)
        self.client_errors[key] = self.client_errors.get(key, 0) + 1

    def retain(self, names: set[str]) -> None:
        """The ring is now ``names`` (on every swap): a replica that left starts its linger, one
        back in the ring ends it (its counters go on from where they were), and the lingers
        that ended are forgotten (``prune``)."""
        now = self._clock()
        for name in self.replicas:
            if name in names:
                self.departed.pop(name, None)
            elif name not in self.departed:
                self.departed[name] = now
        self.prune(now)

    def prune(self, now: float | None = None) -> None:
        """Forget the departed replicas whose linger ended, and the oldest departures beyond
        ``max_departed``. An exchange still in flight on one keeps its own reference: what it
        counts after that goes nowhere."""
        now = self._clock() if now is None else now
        over = len(self.departed) - self.max_departed
        for name, left in list(self.departed.items()):  # oldest first
            if over > 0 or now - left >= self.linger_s:
                del self.departed[name]
                self.replicas.pop(name, None)
                over -= 1
            else:
                break  # the rest left later


def stats_snapshot(stats: TrafficStats) -> dict[str, Any]:
    """The counters as JSON-ready dicts (the departed replicas whose linger ended forgotten
    first)."""
    stats.prune()
    return {
        "client_connections": stats.client_connections,
        "refused_connections": stats.refused_connections,
        "client_errors": dict(stats.client_errors),
        "no_replica": stats.no_replica,
        "retry_budget_exhausted": stats.retry_budget_exhausted,
        "replicas": {name: stats_snapshot_of(st) for name, st in stats.replicas.items()},
    }


def merged(stats: TrafficStats) -> dict[str, Any]:
    """This process's counters plus every worker's latest snapshot, summed."""
    total = stats_snapshot(stats)
    for snap in stats.remote.values():
        total["client_connections"] += snap["client_connections"]
        total["no_replica"] += snap["no_replica"]
        total["refused_connections"] += snap.get("refused_connections", 0)
        total["retry_budget_exhausted"] += snap.get("retry_budget_exhausted", 0)
        for code, count in snap["client_errors"].items():
            total["client_errors"][code] = total["client_errors"].get(code, 0) + count
        for name, theirs in snap["replicas"].items():
            mine = total["replicas"].setdefault(name, _zero())
            for key in ("requests", "retries", "spills", "in_flight", "latency_sum_s"):
                mine[key] += theirs[key]
            for key in ("ejections", "ejected"):  # ejected: how many processes eject it
                mine[key] += theirs.get(key, 0)
            mine["by_class"] = [
                a + b for a, b in zip(mine["by_class"], theirs["by_class"], strict=True)
            ]
            mine["buckets"] = [
                a + b for a, b in zip(mine["buckets"], theirs["buckets"], strict=True)
            ]
            mine["errors"] = {k: mine["errors"].get(k, 0) + v for k, v in theirs["errors"].items()}
    return total


def _zero() -> dict[str, Any]:
    return stats_snapshot_of(ReplicaStats())


def stats_snapshot_of(st: ReplicaStats) -> dict[str, Any]:
    return {
        "requests": st.requests,
        "by_class": list(st.by_class),
        "errors": dict(st.errors),
        "retries": st.retries,
        "spills": st.spills,
        "ejections": st.ejections,
        "ejected": st.ejected,
        "in_flight": st.in_flight,
        "latency_sum_s": st.latency_sum_s,
        "buckets": list(st.buckets),
    }

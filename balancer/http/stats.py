"""Per-replica traffic counters, cheap enough to update on every request.

Owns ``ReplicaStats`` and ``TrafficStats``: plain Python integers and floats updated in place on
the data path; ``balancer.api.metrics`` turns them into Prometheus samples only when scraped, so a
request costs a few attribute increments instead of labelled metric calls.
Must not import: asyncio, aiohttp, prometheus_client, redis, docker.
"""

from __future__ import annotations

from bisect import bisect_left
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
    """Everything the data path counts; one instance per balancer process."""

    def __init__(self) -> None:
        self.replicas: dict[str, ReplicaStats] = {}
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
        """Forget replicas that left the ring (their metric label sets disappear)."""
        for name in list(self.replicas):
            st = self.replicas[name]
            if name not in names and st.in_flight == 0 and st.connecting == 0:
                del self.replicas[name]


def stats_snapshot(stats: TrafficStats) -> dict[str, Any]:
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

"""The per-replica traffic series of ``/metrics``: which replicas have them, and their samples.

Owns ``Departures`` (the replicas that left the ring and are still exported) and
``replica_families`` (``lb_upstream_*``, ``lb_bounded_load_spills_total`` and
``lb_outlier_ejections_total`` of the replicas exported, from ``merged`` traffic counters).

Which replicas: every member of the ring in use, plus each replica that left it less than
``linger_s`` ago (at most ``max_departed`` of them, the oldest departure dropped first). A killed
replica's connect errors, resets and the retries away from it are counted in the second before
the ring drops it; a Prometheus that scrapes every 5-60 s would never see them if the series
went with the ring (``max_over_time(lb_upstream_retries_total[2m])`` stayed empty after a kill),
which is when the error panels and the 5xx/retry alerts matter most. The default linger
(``balancer.http.stats.DEPARTED_LINGER_S``, 300 s) is Prometheus' own 5-minute lookback: any
scrape interval it supports (up to ~2 min) scrapes the final values at least twice, with one
scrape missed. The cap keeps label sets bounded when replicas churn.

What lingers: the counters and the latency histogram, with the values they had (and what the
requests still in flight on the replica add), and ``lb_upstream_in_flight``, which falls to 0 as
those requests end: the panel's line ends at 0 instead of at its last value before the removal,
and the sum over replicas stays this instance's real load (bounded loads count those requests
too). Gauges of the ring itself (``lb_replica_up``, ``_weight``, ``_keyspace_share``,
``_heartbeat_age_seconds``, ``_ejected``) describe members only and go when a replica leaves.

Every label value is there from the replica's first scrape, at 0: the five status classes
1xx-5xx (a final 101 is possible; the others are what HTTP has) and the fixed error kinds
(``balancer.http.stats.ERROR_KINDS``). A counter that appears on its first increment hides that
increment from ``rate()`` and ``increase()``, which need two samples: the first burst of 5xx of
a replica would be invisible (Prometheus' "initialize your metrics").
Must not import: redis, docker, aiohttp.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from balancer.http.stats import ERROR_KINDS, LATENCY_BUCKETS_S, ReplicaStats, stats_snapshot_of

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")  # by_class[1] .. by_class[5]
_BOUNDS = (*(repr(b) for b in LATENCY_BUCKETS_S), "+Inf")  # the histogram's ``le`` values


class Departures:
    """Replicas that left the ring and are still exported, with the time each left.

    Args:
        linger_s: how long a departed replica stays exported.
        max_departed: the most departed replicas exported (the oldest departure goes first).
        clock: seconds, monotonic.
    """

    def __init__(
        self, linger_s: float, max_departed: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.linger_s = linger_s
        self.max_departed = max_departed
        self._clock = clock
        self._left: dict[str, float] = {}  # name → when it left; first departure first

    def swapped(self, old: Iterable[str], new: Collection[str]) -> None:
        """A ring swap from members ``old`` to ``new``: those that left start their linger,
        those back in the ring are members again."""
        now = self._clock()
        for name in new:
            self._left.pop(name, None)
        for name in old:
            if name not in new:
                self._left[name] = now
        self._prune(now)

    def names(self) -> list[str]:
        """The departed replicas to export now, first departure first."""
        self._prune(self._clock())
        return list(self._left)

    def _prune(self, now: float) -> None:
        over = len(self._left) - self.max_departed
        for name, left in list(self._left.items()):
            if over <= 0 and now - left < self.linger_s:
                break  # the rest left later
            del self._left[name]
            over -= 1


_ZERO = stats_snapshot_of(ReplicaStats())


def replica_families(replicas: dict[str, dict[str, Any]], names: Sequence[str]) -> Iterator[Metric]:
    """The per-replica counters, the latency histogram and ``lb_upstream_in_flight`` of
    ``names`` (members and lingering departed replicas), at 0 where nothing was counted.

    Args:
        replicas: ``merged(stats)["replicas"]``: the counters of every process, by name.
        names: the replicas to export.
    """
    counted = [(name, replicas.get(name, _ZERO)) for name in names]
    yield from _outcomes(counted)
    yield from _load(counted)


def _outcomes(counted: list[tuple[str, dict[str, Any]]]) -> Iterator[Metric]:
    """How the exchanges with each replica ended: responses, errors, retries, spills and
    ejections."""
    responses = CounterMetricFamily(
        "lb_upstream_responses",
        "Responses each replica answered (also ones retried elsewhere, never relayed)",
        labels=["replica", "code"],
    )
    errors = CounterMetricFamily(
        "lb_upstream_errors", "Failed upstream exchanges", labels=["replica", "kind"]
    )
    retries = CounterMetricFamily(
        "lb_upstream_retries", "Requests retried away from a replica", labels=["replica"]
    )
    spills = CounterMetricFamily(
        "lb_bounded_load_spills",
        "Requests sent away from the replica owning their key because it was at its load cap",
        labels=["replica"],
    )
    ejections = CounterMetricFamily(
        "lb_outlier_ejections",
        "Times outlier detection ejected the replica from routing",
        labels=["replica"],
    )
    for name, st in counted:
        for cls, code in enumerate(STATUS_CLASSES, 1):
            responses.add_metric([name, code], st["by_class"][cls])
        for kind, count in {**dict.fromkeys(ERROR_KINDS, 0), **st["errors"]}.items():
            errors.add_metric([name, kind], count)
        retries.add_metric([name], st["retries"])
        spills.add_metric([name], st["spills"])
        ejections.add_metric([name], st.get("ejections", 0))
    yield from (responses, errors, retries, spills, ejections)


def _load(counted: list[tuple[str, dict[str, Any]]]) -> Iterator[Metric]:
    """Requests in flight on each replica, and the latency of those that completed."""
    in_flight = GaugeMetricFamily(
        "lb_upstream_in_flight", "Requests in flight per replica", labels=["replica"]
    )
    latency = HistogramMetricFamily(
        "lb_upstream_latency_seconds",
        "Time from request sent to response complete",
        labels=["replica"],
    )
    for name, st in counted:
        in_flight.add_metric([name], st["in_flight"])
        latency.add_metric([name], _cumulative(st["buckets"]), st["latency_sum_s"])
    yield from (in_flight, latency)


def _cumulative(buckets: Sequence[int]) -> list[tuple[str, float]]:
    cumulative = 0
    out: list[tuple[str, float]] = []
    for bound, count in zip(_BOUNDS, buckets, strict=True):
        cumulative += count
        out.append((bound, cumulative))
    return out

"""The numbers loadgen reports: latency percentiles, load per replica, a run's summary.

Owns ``percentile`` (linear interpolation between closest ranks, numpy's default),
``LoadStats`` (mean/min/max/stdev/peak-to-mean of requests per replica; stdev is the population
stdev over the replicas) and ``summarize`` (requests → ``Summary``). Pure: no I/O.
Must not import anything from ``balancer`` or ``server``.
"""

from __future__ import annotations

import collections
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from loadgen.contract import natural_key
from loadgen.records import RequestRecord


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``; NaN for no values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is not in 0..100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LoadStats:
    """Requests per replica over ``n`` replicas (replicas that got none count as 0)."""

    n: int
    total: int
    mean: float
    min: int
    max: int
    stdev: float

    @property
    def peak_to_mean(self) -> float:
        return self.max / self.mean if self.mean else 0.0

    @classmethod
    def of(cls, counts: Sequence[int]) -> LoadStats:
        if not counts:
            return cls(0, 0, 0.0, 0, 0, 0.0)
        return cls(
            n=len(counts),
            total=sum(counts),
            mean=statistics.fmean(counts),
            min=min(counts),
            max=max(counts),
            stdev=statistics.pstdev(counts),
        )


@dataclass
class Summary:
    requests: int
    ok: int
    seconds: float
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    per_replica: collections.Counter[str] = field(default_factory=collections.Counter)
    p50_s: float = math.nan
    p99_s: float = math.nan
    max_lag_s: float = 0.0  # open loop: how late the latest send was against its schedule

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def load(self) -> LoadStats:
        return LoadStats.of(list(self.per_replica.values()))


def summarize(records: Iterable[RequestRecord], seconds: float, max_lag_s: float = 0.0) -> Summary:
    """Every record counted once: as ok (with its replica, when known) or as a failure reason.
    Latency percentiles are over the ok requests."""
    summary = Summary(requests=0, ok=0, seconds=seconds, max_lag_s=max_lag_s)
    latencies: list[float] = []
    for record in records:
        summary.requests += 1
        if record.ok:
            summary.ok += 1
            latencies.append(record.latency_s)
            summary.per_replica[record.replica or "(unknown)"] += 1
        else:
            summary.failures[record.error or "?"] += 1
    summary.p50_s = percentile(latencies, 50)
    summary.p99_s = percentile(latencies, 99)
    return summary


def format_summary(summary: Summary) -> str:
    """The driver's printed summary."""
    s = summary
    lines = [
        f"requests {s.requests}   ok {s.ok}   failed {s.requests - s.ok}   "
        f"{s.seconds:.2f} s   {s.rate:.0f} req/s",
        f"latency (ok)  p50 {1000 * s.p50_s:.2f} ms   p99 {1000 * s.p99_s:.2f} ms",
    ]
    if s.max_lag_s > 0.01:
        lines.append(f"sends fell behind the --rate schedule by up to {s.max_lag_s:.3f} s")
    for reason, count in s.failures.most_common():
        lines.append(f"  failed: {reason:<28} {count:>8}")
    for replica in sorted(s.per_replica, key=natural_key):
        count = s.per_replica[replica]
        lines.append(f"  {replica:<20} {count:>8}  {100 * count / max(s.ok, 1):5.1f}%")
    if s.per_replica:
        load = s.load
        lines.append(
            f"per replica: mean {load.mean:.1f}  min {load.min}  max {load.max}  "
            f"stdev {load.stdev:.1f}  peak/mean {load.peak_to_mean:.3f}"
        )
    return "\n".join(lines)

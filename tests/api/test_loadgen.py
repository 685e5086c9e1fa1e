"""The loadgen's spread measurement against a live balancer."""

from __future__ import annotations

from loadgen.spread import measure_spread
from tests.conftest import Balancer


async def test_measure_spread_counts_every_replica(lb: Balancer) -> None:
    url = f"{lb.url}/home"
    spread = await measure_spread(url, 600, connections=20)
    assert not spread.failures
    assert set(spread.per_replica) == {"1", "2", "3"}
    assert sum(spread.per_replica.values()) == 600
    assert 1.0 <= spread.peak_to_mean < 1.5


async def test_measure_spread_reports_failures(lb: Balancer) -> None:
    spread = await measure_spread(f"{lb.url}/nope", 10)
    assert spread.failures == {"HTTP 400": 10}
    assert spread.peak_to_mean == 0.0

"""``Backoff``: full jitter under a doubling ceiling, capped."""

from __future__ import annotations

import random

import pytest

from balancer.backoff import Backoff


@pytest.mark.parametrize("failures", [0, 1, 2, 3, 5, 6, 10, 30, 31, 1000])
def test_backoff_within_bounds(failures: int) -> None:
    backoff = Backoff(base_s=0.1, cap_s=5.0, rng=random.Random(failures))
    ceiling = min(5.0, 0.1 * 2**failures)
    samples = [backoff.compute(failures) for _ in range(500)]
    assert all(0.0 <= s <= ceiling for s in samples)
    # Full jitter: the delays spread over the whole range, not a point.
    assert max(samples) > 0.9 * ceiling
    assert min(samples) < 0.1 * ceiling


class CeilingRng(random.Random):
    """Returns the top of the requested range, so ``compute`` shows its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        assert a == 0.0
        return b


@pytest.mark.parametrize(
    ("failures", "ceiling"), [(0, 0.1), (1, 0.2), (3, 0.8), (5, 3.2), (6, 5.0), (10**6, 5.0)]
)
def test_backoff_ceiling(failures: int, ceiling: float) -> None:
    assert Backoff(0.1, 5.0, CeilingRng()).compute(failures) == pytest.approx(ceiling)


def test_backoff_is_deterministic_with_a_seeded_rng() -> None:
    a = Backoff(rng=random.Random(7))
    b = Backoff(rng=random.Random(7))
    assert [a.compute(n) for n in range(10)] == [b.compute(n) for n in range(10)]

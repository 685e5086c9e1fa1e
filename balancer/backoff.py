"""Retry delays: exponential with full jitter, as an object with ``compute(failures)``.

Owns ``Backoff``. Must not import: asyncio, aiohttp, redis, docker or project modules.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """``compute(n)`` → a delay in ``[0, min(cap_s, base_s · 2ⁿ)]`` (full jitter)."""

    base_s: float = 0.1
    cap_s: float = 5.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def compute(self, failures: int) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(failures, 30))
        return self.rng.uniform(0.0, ceiling)

"""Analysis A-1: send N concurrent ``GET /home`` and count the answers per replica.

Owns ``measure_spread``. It speaks only HTTP to the balancer, the way the assignment's clients
do (one ``ClientSession``, one ``asyncio.gather``), and reads the replica id from ``message``.
Must not import: anything from ``balancer`` or ``server``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass
class Spread:
    """Outcome of one run."""

    requests: int
    seconds: float
    per_replica: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def peak_to_mean(self) -> float:
        counts = self.per_replica.values()
        return max(counts) * len(counts) / sum(counts) if counts else 0.0


async def measure_spread(
    url: str, requests: int, *, connections: int = 100, timeout_s: float = 10.0
) -> Spread:
    """Send ``requests`` GETs to ``url`` at once over ``connections`` pooled connections."""
    result = Spread(requests, 0.0)
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            try:
                async with session.get(url) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status == 200:
                        result.per_replica[str(body["message"]).split()[-1]] += 1
                    else:
                        result.failures[f"HTTP {resp.status}"] += 1
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                result.failures[type(exc).__name__] += 1

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(requests)))
        result.seconds = time.monotonic() - started
    return result

"""Sampled access log: one canonical JSON line per sampled request, logger ``balancer.access``.

Owns ``AccessLog``. Off by default (rate 0): the data path then pays one attribute test per
request. At rate r, each finished request is logged with probability r, so a busy balancer can
keep a representative trail without logging every request.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import json
import logging
import random

log = logging.getLogger("balancer.access")


class AccessLog:
    __slots__ = ("_rng", "rate")

    def __init__(self, rate: float, rng: random.Random | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("access log sample rate must be in [0, 1]")
        self.rate = rate
        self._rng = rng or random.Random()

    def sampled(self) -> bool:
        return self.rate >= 1.0 or self._rng.random() < self.rate

    def record(
        self,
        *,
        client: str,
        method: bytes,
        target: bytes,
        replica: str,
        status: int,
        duration_s: float | None,
        retries: int,
    ) -> None:
        log.info(
            "%s",
            json.dumps(
                {
                    "client": client,
                    "method": method.decode("latin-1"),
                    "target": target.decode("utf-8", "replace"),
                    "replica": replica,
                    "status": status,
                    "duration_ms": None if duration_s is None else round(duration_s * 1000, 3),
                    "retries": retries,
                },
                separators=(",", ":"),
            ),
        )

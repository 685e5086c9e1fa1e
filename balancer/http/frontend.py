"""The listening side of the data path: the server socket and what connections share.

Owns ``Frontend``: the ring view, upstream pool, counters, key extractor, balance factor and
limits every ``ClientConn`` uses, the listening socket, and the sweeper that enforces timeouts
without a timer per request. Admin paths (``/rep``, ``/add``, ``/rm``, ``/lb/…``, ``/metrics``) are
forwarded to the aiohttp admin app over a unix socket like any upstream.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
import logging

from balancer.accesslog import AccessLog
from balancer.http.client import ClientConn, header_actions
from balancer.http.upstream import UpstreamPool
from balancer.keysource import RawKeyExtractor
from balancer.membership import RingView, Snapshot
from balancer.stats import TrafficStats

log = logging.getLogger(__name__)


class Frontend:
    """Shared state of every client connection of one balancer process."""

    def __init__(
        self,
        view: RingView,
        pool: UpstreamPool,
        stats: TrafficStats,
        keys: RawKeyExtractor,
        *,
        admin_address: str,
        retries: int,
        upstream_timeout_s: float,
        client_idle_timeout_s: float = 60.0,
        header_timeout_s: float = 10.0,
        max_head_bytes: int = 32 * 1024,
        replay_limit: int = 64 * 1024,
        access: AccessLog | None = None,
    ) -> None:
        self.view = view
        self.pool = pool
        self.stats = stats
        self.keys = keys
        self.header_actions = header_actions(keys.header_names)
        self.admin_address = admin_address
        self.retries = retries
        self.upstream_timeout_s = upstream_timeout_s
        self.client_idle_timeout_s = client_idle_timeout_s
        self.header_timeout_s = header_timeout_s
        self.max_head_bytes = max_head_bytes
        self.replay_limit = replay_limit
        self.access = access or AccessLog(0.0)
        self.loop = asyncio.get_running_loop()
        self.connections: set[ClientConn] = set()
        # Bounded loads' c (0 = off), tested by every request, so kept here; the ring settings
        # in force set it, again at every ring swap (shared settings can change at runtime).
        self.balance_factor = view.current.settings.balance_factor
        view.listeners.append(self._ring_swapped)

    def _ring_swapped(self, old: Snapshot, new: Snapshot) -> None:
        self.balance_factor = new.settings.balance_factor

    async def listen(self, host: str, port: int, *, reuse_port: bool = False) -> asyncio.Server:
        return await self.loop.create_server(
            lambda: ClientConn(self), host, port, backlog=4096, reuse_port=reuse_port
        )

    def sweep(self) -> None:
        """Enforce upstream, header and idle timeouts; close expired pooled connections."""
        now = self.loop.time()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        self.pool.sweep(now)

    async def run_sweeper(self, every_s: float = 0.25) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed")

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.transport.close()
        self.pool.close()

"""The listening side of the data path: the server socket and what connections share.

Owns ``Frontend``: the ring view, upstream pool, counters, key extractor, balance factor,
retry policy (``RetryPolicy``), outlier detector and limits every ``ClientConn`` uses, the
listening socket, and the sweeper that enforces timeouts and ends ejections without a timer per
request. Admin paths (``/rep``, ``/add``, ``/rm``, ``/lb/…``, ``/metrics``) are
forwarded to the aiohttp admin app over a unix socket like any upstream.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from balancer.http.accesslog import AccessLog
from balancer.http.client import ClientConn, header_actions
from balancer.http.keysource import RawKeyExtractor, parse_key_sources
from balancer.http.outlier import EjectionPolicy, OutlierDetector
from balancer.http.stats import TrafficStats
from balancer.http.upstream import UpstreamPool
from balancer.state.view import RingView, Snapshot

if TYPE_CHECKING:
    from balancer.http.sections import EjectionSettings, HttpSettings, RetrySettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Which failed requests go to the key's next replica (``balancer.http.choice``)."""

    methods: Collection[str] = ("GET", "HEAD", "OPTIONS")  # retried once bytes were sent
    on: Collection[str] = ("connect", "reset")  # of connect, reset, 5xx, gateway-error
    timeout_s: float = 5.0  # no new attempt this long after the request's start
    budget: float = 0.2  # retries in flight ≤ max(min_concurrency, budget × requests in flight)
    min_concurrency: int = 3


# The answers each ``retry_on`` condition retries (Envoy's ``5xx`` and ``gateway-error``).
RETRIED_STATUSES = {"5xx": range(500, 600), "gateway-error": range(502, 505)}


@dataclass(frozen=True)
class Timeouts:
    """Every state of a client connection has one that applies (enforced by the sweeper, in
    ``ClientConn.check_timeouts``), HAProxy's ``timeout http-request`` / ``client`` /
    ``server`` / ``http-keep-alive`` model:

    - ``header_s``: a request head must be complete this long after its first byte (408);
    - ``client_s``: inactivity while the balancer waits for the client: request body bytes not
      arriving (408, or a reset once a response started), a response it does not read, the
      rest of a body after an early answer (then the connection closes);
    - ``upstream_s``: inactivity while a replica owes bytes: no byte to or from it (504, or a
      reset of the client connection once part of the response was relayed);
    - ``upstream_total_s``: optional bound from sending a request to its complete answer
      (0 = none);
    - ``idle_s``: a keep-alive connection between requests.
    """

    header_s: float = 10.0
    client_s: float = 30.0
    upstream_s: float = 30.0
    upstream_total_s: float = 0.0
    idle_s: float = 60.0


def timeouts(s: HttpSettings) -> Timeouts:
    """The data path's timeouts ``s`` configures."""
    return Timeouts(
        header_s=s.header_timeout_s,
        client_s=s.client_timeout_s,
        upstream_s=s.upstream_timeout_s,
        upstream_total_s=s.upstream_total_timeout_s,
        idle_s=s.client_idle_timeout_s,
    )


def connection_limit(s: HttpSettings) -> int:
    """The most client connections this process holds at once (HAProxy's ``maxconn``):
    ``max_connections``, or by default what the descriptor limit allows once raised to its
    hard maximum (nginx's ``worker_rlimit_nofile``): two per client connection (its upstream
    connection) plus a reserve for health checks, the store and the admin app. Past it a new
    connection is closed at once, so a flood of connections cannot starve the descriptors the
    balancer needs to probe and reach its replicas."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    auto = max(1, (soft - _RESERVED_DESCRIPTORS) // 2)
    return min(s.max_connections, auto) if s.max_connections else auto


_RESERVED_DESCRIPTORS = 256


def retry_policy(s: RetrySettings) -> RetryPolicy:
    """The retry policy ``s`` configures."""
    return RetryPolicy(s.method_set, s.on_set, s.timeout_s, s.budget)


def ejection_policy(s: EjectionSettings) -> EjectionPolicy:
    """The outlier ejection policy ``s`` configures."""
    return EjectionPolicy(
        consecutive=s.consecutive,
        base_s=s.base_s,
        max_s=s.max_s,
        max_share=s.max_share,
        statuses=s.status_set if s.on_5xx else frozenset(),
    )


def configured_frontend(
    view: RingView,
    stats: TrafficStats,
    *,
    http: HttpSettings,
    retry: RetrySettings,
    ejection: EjectionSettings,
    admin_address: str,
) -> Frontend:
    """The data path the sections configure (the primary and every worker process build it
    this one way), with its own upstream pool."""
    return Frontend(
        view,
        UpstreamPool(connect_timeout_s=http.upstream_connect_timeout_s),
        stats,
        RawKeyExtractor(parse_key_sources(http.key_source)),
        admin_address=admin_address,
        retries=retry.retries,
        timeouts=timeouts(http),
        max_connections=connection_limit(http),
        access=AccessLog(http.access_log_sample),
        retry=retry_policy(retry),
        ejection=ejection_policy(ejection),
    )


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
        timeouts: Timeouts | None = None,
        max_connections: int = 1 << 20,
        max_head_bytes: int = 32 * 1024,
        replay_limit: int = 64 * 1024,
        access: AccessLog | None = None,
        retry: RetryPolicy | None = None,
        ejection: EjectionPolicy | None = None,
    ) -> None:
        self.view = view
        self.pool = pool
        self.stats = stats
        self.keys = keys
        self.header_actions = header_actions(keys.header_names)
        self.admin_address = admin_address
        self.retries = retries
        self.timeouts = timeouts or Timeouts()
        self.max_connections = max_connections
        self.max_head_bytes = max_head_bytes
        self.replay_limit = replay_limit
        self.access = access or AccessLog(0.0)
        self.loop = asyncio.get_running_loop()
        # The retry policy, flattened for the exchange (read on failures only).
        retry = retry or RetryPolicy()
        self.retry_methods = frozenset(m.encode() for m in retry.methods)
        self.retry_on_connect = "connect" in retry.on
        self.retry_on_reset = "reset" in retry.on
        self.retry_statuses = frozenset(
            status for on in retry.on for status in RETRIED_STATUSES.get(on, ())
        )
        self.retry_timeout_s = retry.timeout_s
        self.retry_budget = retry.budget
        self.retry_min_concurrency = retry.min_concurrency
        # Passive health. ``ejected`` and ``failing`` are the detector's own dicts, tested by
        # every request (empty while all replicas are healthy).
        ejection = ejection or EjectionPolicy()
        self.outlier = OutlierDetector(ejection, self.loop.time)
        self.outlier.retain(view.current.ring.members)
        self.ejected = self.outlier.ejected
        self.failing = self.outlier.failing
        self.eject_statuses = ejection.statuses
        # The answers the exchange stops at before relaying (ejection counts or retry_on retries).
        self.error_statuses = self.eject_statuses | self.retry_statuses
        self.connections: set[ClientConn] = set()
        # Bounded loads' c (0 = off), tested by every request, so kept here; the ring settings
        # in force set it, again at every ring swap (shared settings can change at runtime).
        self.balance_factor = view.current.settings.balance_factor
        view.listeners.append(self._ring_swapped)

    def _ring_swapped(self, old: Snapshot, new: Snapshot) -> None:
        self.balance_factor = new.settings.balance_factor
        self._unejected(self.outlier.retain(new.ring.members))  # left, or drained
        for name, address in old.addresses.items():  # idle connections to a replica now gone
            if new.addresses.get(name) != address:
                self.pool.drop_address(address)
        self.stats.retain(set(new.addresses))

    async def listen(self, host: str, port: int, *, reuse_port: bool = False) -> asyncio.Server:
        return await self.loop.create_server(
            lambda: ClientConn(self), host, port, backlog=4096, reuse_port=reuse_port
        )

    def sweep(self) -> None:
        """Enforce upstream, header and idle timeouts; close expired pooled connections; end
        ejections whose time is up (in the counters: routing already ignores them)."""
        now = self.loop.time()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        self.pool.sweep(now)
        self._unejected(self.outlier.sweep())

    def hold_down(self, down: set[str]) -> None:
        """Keep the replicas the active health checks report DOWN out of this process's routing
        until they are UP again (see ``OutlierDetector.hold_down``)."""
        held_before = set(self.outlier.ejected_now())
        self._unejected(self.outlier.hold_down(down))
        for name in set(self.outlier.ejected_now()) - held_before:
            self.stats.replica(name).ejected = 1
            log.warning("replica %s is DOWN: out of routing until it is UP again", name)

    def _unejected(self, names: list[str]) -> None:
        for name in names:
            st = self.stats.replicas.get(name)
            if st is not None:
                st.ejected = 0

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

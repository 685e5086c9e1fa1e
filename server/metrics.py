"""The replica's own Prometheus metrics, on a registry per app (never the global one).

Owns ``ServerMetrics``: a middleware that counts every request except scrapes of ``/metrics``
itself, and the ``GET /metrics`` handler. Exposed:
  - ``server_requests_total{path,code}``: ``path`` is ``/home``, ``/heartbeat`` or ``other``
    (bounded: any other path a client sends counts as ``other``); ``code`` the HTTP status;
  - ``server_request_duration_seconds{path}``: handler time, a histogram;
  - ``server_in_flight``: requests being handled now;
  - ``server_info{server_id}``: 1, names the replica.
The middleware never touches a response, so the contract's bytes are unchanged.
Must not import: anything from ``balancer``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

PATHS = frozenset({"/home", "/heartbeat"})
OTHER = "other"
METRICS_PATH = "/metrics"
# A replica answers in well under a millisecond: finer than prometheus_client's defaults.
DURATION_BUCKETS_S = (
    0.0001,
    0.00025,
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
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServerMetrics:
    """The metrics of one replica app (see the module docstring)."""

    def __init__(self, server_id: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "server_requests",
            "Requests this replica answered, by path (/home, /heartbeat or other) and status",
            ["path", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "server_request_duration_seconds",
            "Time this replica spent answering a request",
            ["path"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "server_in_flight", "Requests this replica is answering now", registry=self.registry
        )
        info = Info("server", "The replica's identity", registry=self.registry)
        info.info({"server_id": server_id})
        # Labelled children, looked up once: ``labels()`` costs more than the increment.
        self._observe = {p: self.duration.labels(p).observe for p in (*PATHS, OTHER)}
        self._count: dict[tuple[str, int], Callable[[], None]] = {}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == METRICS_PATH:
            return await handler(request)
        path = request.path if request.path in PATHS else OTHER
        status = 500  # what aiohttp answers when a handler raises anything else
        self.in_flight.inc()
        started = time.perf_counter()
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # 404 for unknown paths, 405, …
            status = exc.status
            raise
        finally:
            self._observe[path](time.perf_counter() - started)
            count = self._count.get((path, status))
            if count is None:
                count = self._count[path, status] = self.requests.labels(path, str(status)).inc
            count()
            self.in_flight.dec()

    async def handler(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

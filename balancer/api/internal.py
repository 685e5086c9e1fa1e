"""Routes for this balancer's own worker processes, served on a socket of their own.

Owns ``InternalApi``: ``GET /lb/membership`` (the ring document; ``wait_epoch`` makes it a long
poll) and ``POST /lb/worker-stats`` (a worker's latest counters). The primary serves them on a
private unix socket that only its workers are told about; the public admin app does not have
these routes at all, so no request through the public port can reach them, whatever its path
or encoding (before, two lists of paths had to agree to keep them off the public port).
Must not import: redis, docker, ``balancer.http.frontend``.
"""

from __future__ import annotations

from aiohttp import web

from balancer.http.stats import TrafficStats
from balancer.state.codec import membership_json
from balancer.state.view import RingView
from balancer.wire import CONTENT_TYPE, error_body

MAX_WAIT_S = 30.0


class InternalApi:
    """The primary's side of the worker protocol."""

    def __init__(self, view: RingView, stats: TrafficStats) -> None:
        self._view = view
        self._stats = stats

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/lb/membership", self.membership),
            web.post("/lb/worker-stats", self.worker_stats),
        ]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_routes(self.routes())
        return app

    async def membership(self, request: web.Request) -> web.Response:
        """The membership document; ``wait_epoch`` (and ``timeout_s``) make it a long poll."""
        try:
            wait_epoch = request.query.get("wait_epoch")
            if wait_epoch is not None:
                timeout_s = float(request.query.get("timeout_s", "5"))
                if not 0 <= timeout_s <= MAX_WAIT_S:  # NaN too
                    raise ValueError(timeout_s)
                await self._view.wait_for_change(int(wait_epoch), timeout_s)
        except ValueError:
            return _bad("'wait_epoch' must be an integer, 'timeout_s' in 0..30")
        return web.json_response(membership_json(self._view.current.membership))

    async def worker_stats(self, request: web.Request) -> web.Response:
        """Keep a worker's latest counters (``/metrics`` adds them to this process's)."""
        worker = request.query.get("id")
        if not worker:
            return _bad("'id' is required")
        try:
            data = await request.json()
        except ValueError:
            return _bad("Request body is not valid JSON")
        if not isinstance(data, dict):
            return _bad("Request body must be a JSON object")
        self._stats.remote[worker] = data
        return web.Response(status=204)


def _bad(message: str) -> web.Response:
    return web.Response(status=400, body=error_body(message), content_type=CONTENT_TYPE)

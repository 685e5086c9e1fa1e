"""The replica's HTTP app.

Owns the contract's replica endpoints: ``GET /home`` answers
``{"message": "Hello from Server: <ID>", "status": "successful"}`` with content type exactly
``application/json``; ``GET /heartbeat`` answers 200 with an empty body; any other path is 404
(the balancer turns that into the contract's error). ``GET /metrics`` is the replica's own
Prometheus exposition (``server.metrics``), on a registry of its own per app.
Must not import: anything from ``balancer``.
"""

from __future__ import annotations

import json

from aiohttp import web

from server.metrics import ServerMetrics

SERVER_ID_KEY = web.AppKey("server_id", str)
METRICS_KEY = web.AppKey("metrics", ServerMetrics)


def home_body(server_id: str) -> bytes:
    """The exact bytes of the ``/home`` answer."""
    return json.dumps(
        {"message": f"Hello from Server: {server_id}", "status": "successful"}
    ).encode()


def create_app(server_id: str) -> web.Application:
    """The replica app for ``server_id`` (one token: no whitespace).

    Raises:
        ValueError: when ``server_id`` is empty or contains whitespace.
    """
    if not server_id or server_id.split() != [server_id]:
        raise ValueError(f"SERVER_ID must be one token without spaces, got {server_id!r}")
    body = home_body(server_id)

    async def home(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def heartbeat(request: web.Request) -> web.Response:
        return web.Response(status=200)

    metrics = ServerMetrics(server_id)
    app = web.Application(middlewares=[metrics.middleware])
    app[SERVER_ID_KEY] = server_id
    app[METRICS_KEY] = metrics
    app.router.add_get("/home", home)
    app.router.add_get("/heartbeat", heartbeat)
    app.router.add_get("/metrics", metrics.handler)
    return app

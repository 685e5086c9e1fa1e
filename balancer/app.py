"""The balancer's aiohttp application: wiring, routes and lifecycles.

Owns ``create_app``. Startup phases (each a ``cleanup_ctx``, torn down in reverse):
  1. HTTP client sessions: one pooled keep-alive session for proxying, one for health probes;
  2. the ring view, loaded from the store, and its watcher task;
  3. the replicas: boot N (the app starts serving only once they pass heartbeats), then the
     health monitor and the supervisor tasks; on shutdown the tasks are cancelled and the
     runtime stops every replica it started.
Must not import: redis, docker (store and runtime arrive ready-made from ``__main__``/tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from functools import partial
from typing import Any

import aiohttp
from aiohttp import web

from balancer.admin import AdminApi
from balancer.config import Settings
from balancer.health import HealthMonitor, wait_ready
from balancer.keysource import KeyExtractor, parse_key_sources
from balancer.manager import ReplicaManager
from balancer.membership import RingView
from balancer.proxy import Proxy, Router
from balancer.runtime import ReplicaRuntime
from balancer.store import Store
from balancer.supervisor import Supervisor

log = logging.getLogger(__name__)

VIEW = web.AppKey("view", RingView)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
MONITOR = web.AppKey("monitor", HealthMonitor)
_SHUTDOWN_S = 10.0


def create_app(settings: Settings, *, store: Store, runtime: ReplicaRuntime) -> web.Application:
    """Build the balancer app; nothing runs until the app is started."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    key_fn = KeyExtractor(parse_key_sources(settings.key_source))
    view = RingView(store, settings.ring)
    app[VIEW] = view
    sessions: dict[str, aiohttp.ClientSession] = {}

    async def http_sessions(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(
            total=settings.upstream_timeout_s,
            connect=settings.upstream_connect_timeout_s,
            sock_connect=settings.upstream_connect_timeout_s,
        )
        sessions["proxy"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024, limit_per_host=256, keepalive_timeout=30),
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        )
        # Probes open a fresh connection each time, so a replica that stopped accepting fails.
        sessions["probe"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0), timeout=timeout
        )
        yield
        await asyncio.gather(*(s.close() for s in sessions.values()))

    async def ring_view(app: web.Application) -> AsyncIterator[None]:
        await view.refresh()
        async with _background(view.watch(), "ring watcher"):
            yield

    async def replicas(app: web.Application) -> AsyncIterator[None]:
        manager, monitor, supervisor = _wire_replicas(settings, store, runtime, view, sessions)
        app[SUPERVISOR] = supervisor
        app[MONITOR] = monitor
        admin = AdminApi(manager, store, view, runtime, settings.algorithm)
        app.router.add_routes(admin.routes())
        proxy = Proxy(Router(view, key_fn, settings.retries), sessions["proxy"])
        app.router.add_route("*", "/{path:.*}", proxy.handle)
        try:
            await supervisor.bootstrap(settings.replicas)
            async with (
                _background(monitor.run(), "health monitor"),
                _background(supervisor.run(), "supervisor"),
            ):
                yield
        finally:
            await asyncio.wait_for(runtime.close(), _SHUTDOWN_S)

    app.cleanup_ctx.extend([http_sessions, ring_view, replicas])
    return app


def _wire_replicas(
    settings: Settings,
    store: Store,
    runtime: ReplicaRuntime,
    view: RingView,
    sessions: dict[str, aiohttp.ClientSession],
) -> tuple[ReplicaManager, HealthMonitor, Supervisor]:
    probe_session = sessions["probe"]
    ready = partial(wait_ready, probe_session, timeout_s=settings.spawn_timeout_s)
    alive_ttl_s = settings.heartbeat_interval_s * settings.heartbeat_fails + min(
        settings.heartbeat_timeout_s, settings.heartbeat_interval_s
    )
    manager = ReplicaManager(
        store,
        runtime,
        ready,
        view.refresh,
        max_replicas=settings.max_replicas,
        alive_ttl_s=alive_ttl_s,
    )
    supervisor = Supervisor(manager, store)
    monitor = HealthMonitor(
        store,
        view,
        probe_session,
        supervisor.on_dead,
        interval_s=settings.heartbeat_interval_s,
        timeout_s=settings.heartbeat_timeout_s,
        fails=settings.heartbeat_fails,
    )
    return manager, monitor, supervisor


@contextlib.asynccontextmanager
async def _background(coro: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run ``coro`` as a task for the duration of the block; cancel and await it afterwards."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

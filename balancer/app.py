"""The balancer process: every component wired together, started and stopped in phases.

Owns ``BalancerService``. Startup phases (each undone in reverse by ``stop``):
  1. a probe ``ClientSession``, the upstream pool and the ring view (loaded, then watched);
  2. the aiohttp admin app (``/rep``, ``/add``, ``/rm``, ``/lb/status``, ``/metrics``) on a
     private unix socket, which the data path forwards admin paths to;
  3. the replicas: boot N (normally ready before phase 4), then the health monitor and the
     supervisor; on stop, the runtime stops every replica it started;
  4. the data path listening on ``host:port``, and its timeout sweeper.
Must not import: redis, docker (store and runtime arrive ready-made from ``__main__``/tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Coroutine, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from balancer.accesslog import AccessLog
from balancer.admin import AdminApi
from balancer.config import Settings
from balancer.health import HealthMonitor, wait_ready
from balancer.http.frontend import Frontend
from balancer.http.upstream import UpstreamPool
from balancer.keysource import RawKeyExtractor, parse_key_sources
from balancer.manager import ReplicaManager
from balancer.membership import RingView, Snapshot
from balancer.metrics import TrafficCollector, metrics_handler
from balancer.runtime import ReplicaRuntime
from balancer.stats import TrafficStats
from balancer.store import Store
from balancer.supervisor import Supervisor
from balancer.workers import WorkerSet

log = logging.getLogger(__name__)

_STOP_REPLICAS_S = 10.0


class BalancerService:
    """One balancer process (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        runtime: ReplicaRuntime,
        worker_argv: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.runtime = runtime
        self.view = RingView(store, settings.ring)
        self.stats = TrafficStats()
        self.registry = CollectorRegistry()
        self.registry.register(TrafficCollector(self.stats, self.view))
        self.pool = UpstreamPool(connect_timeout_s=settings.upstream_connect_timeout_s)
        self.view.listeners.append(self._on_ring_swap)
        self.port = 0
        self._worker_argv = list(worker_argv)
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self.supervisor: Supervisor | None = None
        self.frontend: Frontend | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        stack = self._stack
        # Phase 1: probe session, pool, ring view.
        probe_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
            timeout=aiohttp.ClientTimeout(total=s.heartbeat_timeout_s),
        )
        stack.push_async_callback(probe_session.close)
        stack.callback(self.pool.close)
        await self.view.refresh()
        self._spawn(self.view.watch(), "ring watcher")
        # Phase 2: admin app on a private unix socket.
        manager, monitor, supervisor = self._wire_replicas(probe_session)
        self.supervisor = supervisor
        admin_address = await self._serve_admin(manager)
        # Phase 3: replicas.
        stack.push_async_callback(self._stop_replicas)
        await supervisor.bootstrap(s.replicas)
        self._spawn(monitor.run(), "health monitor")
        self._spawn(supervisor.run(), "supervisor")
        # Phase 4: the data path.
        keys = RawKeyExtractor(parse_key_sources(s.key_source))
        self.frontend = fe = Frontend(
            self.view,
            self.pool,
            self.stats,
            keys,
            admin_address=admin_address,
            retries=s.retries,
            upstream_timeout_s=s.upstream_timeout_s,
            client_idle_timeout_s=s.client_idle_timeout_s,
            header_timeout_s=s.header_timeout_s,
            access=AccessLog(s.access_log_sample),
        )
        server = await fe.listen(s.host, s.port, reuse_port=s.workers > 1)
        stack.callback(fe.close_all)
        stack.push_async_callback(_close_server, server)
        self.port = server.sockets[0].getsockname()[1]
        self._spawn(fe.run_sweeper(), "sweeper")
        if s.workers > 1:
            workers = WorkerSet(s.workers, admin_address, self._worker_argv)
            stack.push_async_callback(workers.stop)
            await workers.start()
        log.info("balancing on http://%s:%d (admin at %s)", s.host, self.port, admin_address)

    async def stop(self) -> None:
        """Stop accepting, cancel background tasks, stop the replicas, release everything."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stack.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    def _wire_replicas(
        self, probe_session: aiohttp.ClientSession
    ) -> tuple[ReplicaManager, HealthMonitor, Supervisor]:
        s = self.settings
        ready = partial(wait_ready, probe_session, timeout_s=s.spawn_timeout_s)
        alive_ttl_s = s.heartbeat_interval_s * s.heartbeat_fails + min(
            s.heartbeat_timeout_s, s.heartbeat_interval_s
        )
        manager = ReplicaManager(
            self.store,
            self.runtime,
            ready,
            self.view.refresh,
            max_replicas=s.max_replicas,
            alive_ttl_s=alive_ttl_s,
        )
        supervisor = Supervisor(manager, self.store)
        monitor = HealthMonitor(
            self.store,
            self.view,
            probe_session,
            supervisor.on_dead,
            interval_s=s.heartbeat_interval_s,
            timeout_s=s.heartbeat_timeout_s,
            fails=s.heartbeat_fails,
        )
        return manager, monitor, supervisor

    async def _serve_admin(self, manager: ReplicaManager) -> str:
        app = web.Application(client_max_size=1024 * 1024)
        admin = AdminApi(
            manager, self.store, self.view, self.runtime, self.settings.algorithm, self.stats
        )
        app.router.add_routes(admin.routes())
        app.router.add_get("/metrics", metrics_handler(self.registry))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        sock_dir = Path(tempfile.mkdtemp(prefix="lb-admin-"))
        self._stack.callback(_remove_dir, sock_dir)
        path = sock_dir / "admin.sock"
        await web.UnixSite(runner, str(path)).start()
        return f"unix:{path}"

    async def _stop_replicas(self) -> None:
        await asyncio.wait_for(self.runtime.close(), _STOP_REPLICAS_S)

    def _on_ring_swap(self, old: Snapshot, new: Snapshot) -> None:
        for name, address in old.addresses.items():
            if new.addresses.get(name) != address:
                self.pool.drop_address(address)
        self.stats.retain(set(new.addresses))


async def _close_server(server: asyncio.Server) -> None:
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 5.0)


def _remove_dir(path: Path) -> None:
    for child in path.iterdir():
        child.unlink(missing_ok=True)
    path.rmdir()

"""The balancer process: every component wired together, started and stopped in phases.

Owns ``BalancerService``. Startup phases (each undone in reverse by ``stop``):
  1. a probe ``ClientSession``, the upstream pool and the ring view (loaded, then watched);
  2. the aiohttp admin app (``/rep``, ``/add``, ``/rm``, ``/lb/status``, ``/metrics``) on a
     private unix socket, which the data path forwards admin paths to;
  3. leadership: campaign, and while leader adopt, boot N (normally ready before phase 4),
     monitor and replace; every instance announces its status in the store. On stop, a single
     instance stops its replicas; of shared instances only the last one out does (the others
     leave them running for the next leader to adopt);
  4. the data path listening on ``host:port``, and its timeout sweeper.
Must not import: redis, docker (store, runtime and coordination arrive ready-made from
``__main__``/tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Coroutine, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from balancer.api.admin import AdminApi
from balancer.api.discovery import TargetsApi
from balancer.api.metrics import Liveness, TrafficCollector, metrics_handler
from balancer.api.openapi import routes as openapi_routes
from balancer.api.routing import RoutingApi
from balancer.api.ui import UiApi
from balancer.config import Settings
from balancer.control.duties import LeaderDuties
from balancer.control.health import HealthMonitor, health_check, wait_ready
from balancer.control.manager import ReplicaManager
from balancer.control.movement_log import MovementLog
from balancer.control.plan import Policy
from balancer.control.reconciler import Reconciler
from balancer.errors import LBError, StoreUnavailable
from balancer.http.accesslog import AccessLog
from balancer.http.frontend import (
    Frontend,
    connection_limit,
    ejection_policy,
    retry_policy,
    timeouts,
)
from balancer.http.keysource import RawKeyExtractor, parse_key_sources
from balancer.http.stats import TrafficStats
from balancer.http.upstream import UpstreamPool
from balancer.http.workers import WorkerSet
from balancer.runtimes.base import ReplicaRuntime
from balancer.state.coordination import AdminRelay, Leadership, NoRelay, SoloLeadership
from balancer.state.store import Store
from balancer.state.view import RingView, Snapshot

log = logging.getLogger(__name__)

_STOP_REPLICAS_S = 10.0
_ANNOUNCE_EVERY_S = 1.0


class BalancerService:
    """One balancer process (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        runtime: ReplicaRuntime,
        leadership: Leadership | None = None,
        relay: AdminRelay | None = None,
        worker_argv: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.runtime = runtime
        self.shared = leadership is not None  # other instances share the store
        self.leadership: Leadership = leadership or SoloLeadership()
        self.relay: AdminRelay = relay or NoRelay()
        self.instance_id = settings.state.instance_id or f"solo:{settings.http.port}"
        self.view = RingView(store, settings.ring)
        self.stats = TrafficStats()
        self.movement = MovementLog(store, settings.ring)
        self.registry = CollectorRegistry()
        self.liveness = Liveness(self.view, self.leadership)  # for lb_replica_up, read at scrape
        self.registry.register(
            TrafficCollector(self.stats, self.view, self.liveness, self.movement)
        )
        self.pool = UpstreamPool(connect_timeout_s=settings.http.upstream_connect_timeout_s)
        self.view.listeners.append(self._on_ring_swap)
        self.port = 0
        self._worker_argv = list(worker_argv)
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self.duties: LeaderDuties | None = None
        self._beats = 0  # announcements so far: peers see a live instance's count move
        self.manager: ReplicaManager | None = None
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
            timeout=aiohttp.ClientTimeout(total=s.health.timeout_s),
        )
        stack.push_async_callback(probe_session.close)
        stack.callback(self.pool.close)
        try:
            await self.view.refresh()
        except StoreUnavailable as exc:  # start anyway: serve 503 until the store is back
            log.error("%s; starting with an empty ring", exc)
        self._spawn(self.view.watch(), "ring watcher")
        self._spawn(self.movement.run(), "movement log")
        # Phase 2: admin app on a private unix socket.
        self.manager = manager = self._manager(probe_session)
        admin = AdminApi(
            manager,
            self.store,
            self.view,
            self.runtime,
            self.stats,
            leadership=self.leadership,
            relay=self.relay,
            instance_id=self.instance_id,
            admin_token=s.admin.token,
        )
        admin_address = await self._serve_admin(admin)
        # Phase 3: leadership and the replicas.
        campaign = asyncio.get_running_loop().create_task(self.leadership.run(), name="campaign")
        stack.push_async_callback(self._resign, campaign)
        stack.push_async_callback(self._retire)
        self.duties = self._duties(manager, probe_session, admin)
        self._spawn(self.duties.run(), "leader duties")
        self._spawn(self._announce(), "announcer")
        with contextlib.suppress(TimeoutError):  # a follower does not wait for a slow leader
            async with asyncio.timeout(s.health.spawn_timeout_s + s.state.leader_ttl_s):
                await self.duties.ready.wait()
        # Phase 4: the data path.
        http = s.http
        keys = RawKeyExtractor(parse_key_sources(http.key_source))
        self.frontend = fe = Frontend(
            self.view,
            self.pool,
            self.stats,
            keys,
            admin_address=admin_address,
            retries=s.retry.retries,
            timeouts=timeouts(http),
            max_connections=connection_limit(http),
            access=AccessLog(http.access_log_sample),
            retry=retry_policy(s.retry),
            ejection=ejection_policy(s.ejection),
        )
        server = await fe.listen(http.host, http.port, reuse_port=http.workers > 1)
        stack.callback(fe.close_all)
        stack.push_async_callback(_close_server, server)
        self.port = server.sockets[0].getsockname()[1]
        self._spawn(fe.run_sweeper(), "sweeper")
        if http.workers > 1:
            workers = WorkerSet(http.workers, admin_address, self._worker_argv)
            stack.push_async_callback(workers.stop)
            await workers.start()
        log.info(
            "balancing on http://%s:%d (instance %s, admin at %s)",
            http.host,
            self.port,
            self.instance_id,
            admin_address,
        )

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

    def _manager(self, probe_session: aiohttp.ClientSession) -> ReplicaManager:
        s = self.settings
        ready = partial(
            wait_ready,
            probe_session,
            timeout_s=s.health.spawn_timeout_s,
            check=health_check(s.health),
        )
        return ReplicaManager(
            self.store,
            self.runtime,
            ready,
            self.view.refresh,
            max_replicas=s.replicas.max_count,
            alive_ttl_s=s.health.alive_ttl_s,
            leadership=self.leadership,
            ring_settings=s.ring,
            on_commit=self.movement.committed,
        )

    def _duties(
        self, manager: ReplicaManager, probe_session: aiohttp.ClientSession, admin: AdminApi
    ) -> LeaderDuties:
        s = self.settings
        reconciler = Reconciler(
            Policy(s.replicas.count, s.health.replace_after_s),
            manager,
            self.store,
            self.runtime,
            known=lambda: self.view.current.membership,
            down=lambda: monitor.down_since,
        )
        monitor = HealthMonitor(
            self.store,
            self.view,
            probe_session,
            s.health,
            on_change=reconciler.wake,
        )
        self.view.listeners.append(lambda _old, _new: reconciler.wake())
        self.liveness.monitor = monitor
        return LeaderDuties(self.leadership, reconciler, monitor, self.relay, admin.apply)

    async def _serve_admin(self, admin: AdminApi) -> str:
        app = web.Application(client_max_size=1024 * 1024, middlewares=[admin.middleware])
        app.router.add_routes(admin.routes())
        routing = RoutingApi(self.view, max_replicas=self.settings.replicas.max_count)
        app.router.add_routes(routing.routes())
        app.router.add_routes(TargetsApi(self.view).routes())
        app.router.add_routes(UiApi(self.view, self.stats).routes())
        app.router.add_get("/metrics", metrics_handler(self.registry))
        app.router.add_routes(openapi_routes())
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        sock_dir = Path(tempfile.mkdtemp(prefix="lb-admin-"))
        self._stack.callback(_remove_dir, sock_dir)
        path = sock_dir / "admin.sock"
        await web.UnixSite(runner, str(path)).start()
        return f"unix:{path}"

    def status(self) -> dict[str, Any]:
        """What this instance announces to the others (and shows in ``/lb/status``)."""
        snapshot = self.view.current
        return {
            "id": self.instance_id,
            "url": f"http://{self.settings.http.host}:{self.port}",
            "pid": os.getpid(),
            "leader": self.leadership.is_leader,
            "epoch": snapshot.epoch,
            "fingerprint": snapshot.fingerprint(),
            "replicas": len(snapshot.membership.replicas),
            "beat": self._beats,
        }

    async def _announce(self) -> None:
        ttl_s = _ANNOUNCE_EVERY_S * 3
        while True:
            self._beats += 1
            with contextlib.suppress(StoreUnavailable):  # the ring watcher reports outages
                await self.store.announce(self.instance_id, self.status(), ttl_s)
            await self.liveness.refresh(self.store)  # never raises; no-op on a steady leader
            if self.frontend is not None:
                self.frontend.hold_down(self._down())
            await asyncio.sleep(_ANNOUNCE_EVERY_S)

    def _down(self) -> set[str]:
        """Members the health checks report DOWN. None when all of them look DOWN: that is a
        gap in the checks (no leader probing yet), not a verdict on every replica."""
        members = self.view.current.ring.members
        down = {name for name in members if self.liveness.up(name) is False}
        return set() if len(down) == len(members) else down

    async def _retire(self) -> None:
        """Stop the replicas if no other instance is left to route to them."""
        if not self.shared:
            await asyncio.wait_for(self.runtime.close(), _STOP_REPLICAS_S)
            return
        try:
            await self.store.withdraw(self.instance_id)
            others = await self._live_peers()
            if others or not self.leadership.is_leader or self.manager is None:
                await self.runtime.release()
                return
            log.info("last instance out: stopping every replica")
            async with asyncio.timeout(_STOP_REPLICAS_S):
                await self.manager.remove_all()
        except (LBError, TimeoutError) as exc:
            log.warning("leaving replicas running: %s", exc)
            await self.runtime.release()

    async def _live_peers(self) -> set[str]:
        """Other instances that still announce themselves: a crashed peer's announcement
        outlives it by up to its TTL, so a peer counts only if its announcement moves on."""
        before = await self.store.instances()
        before.pop(self.instance_id, None)
        if not before:
            return set()
        await asyncio.sleep(_ANNOUNCE_EVERY_S * 1.5)
        after = await self.store.instances()
        return {i for i, info in after.items() if i in before and info != before[i]}

    async def _resign(self, campaign: asyncio.Task[None]) -> None:
        campaign.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await campaign
        await self.leadership.release()

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

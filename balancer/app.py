"""The balancer process: the composition root, read top to bottom.

Owns ``BalancerService``. ``__init__`` builds every object (nothing is filled in later); the
components below are cleanup contexts (``balancer.lifecycle``), started in this order and stopped
in reverse:
  1. ``_probes``: the session the health checks and readiness probes share;
  2. ``_ring``: the ring view loaded from the store and watched, and the movement log;
  3. ``_sockets``: the admin app (``/rep``, ``/add``, ``/rm``, ``/lb/*``, ``/metrics``) on a
     private unix socket, which the data path forwards admin paths to, and the internal app
     (worker processes only) on another;
  4. ``_leadership``: the campaign; on stop, a single instance stops its replicas and of shared
     instances only the last one out does (the others leave them for the next leader to adopt),
     then the lease is released;
  5. ``_leader_duties``: while leader, the reconciler, the health monitor and the admin relay;
     the data path waits (bounded) until the first term has booted the replicas;
  6. ``_announcer``: this instance's status in the store, and the replicas held down;
  7. ``_data_path``: the frontend listening on ``host:port``, and its timeout sweeper;
  8. ``_workers``: more data-path processes on the same port.
Must not import: redis, docker (state and runtime arrive ready-made from ``__main__``/tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Coroutine, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from balancer.api.admin import AdminApi
from balancer.api.discovery import TargetsApi
from balancer.api.internal import InternalApi
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
from balancer.http.frontend import configured_frontend
from balancer.http.stats import TrafficStats
from balancer.http.workers import WorkerSet
from balancer.lifecycle import Lifecycle
from balancer.runtimes.base import ReplicaRuntime
from balancer.runtimes.discovery import managed_by
from balancer.state.backends import StateBackend
from balancer.state.coordination import AdminRelay, Leadership, NoRelay, SoloLeadership
from balancer.state.store import Store
from balancer.state.view import RingView

log = logging.getLogger(__name__)

_STOP_REPLICAS_S = 10.0
_ANNOUNCE_EVERY_S = 1.0
_CLOSE_SERVER_S = 5.0


class BalancerService:
    """One balancer process (see the module docstring). Build it in a running event loop."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        runtime: ReplicaRuntime,
        leadership: Leadership | None = None,
        relay: AdminRelay | None = None,
        worker_argv: Sequence[str] = (),
        shared: bool | None = None,
    ) -> None:
        """``shared``: other instances use the same store (default: a leadership is given)."""
        s = settings
        self.settings = s
        self.store = store
        self.runtime = runtime
        self.shared = leadership is not None if shared is None else shared
        self.leadership: Leadership = leadership or SoloLeadership()
        self.relay: AdminRelay = relay or NoRelay()
        self.instance_id = s.state.instance_id or f"solo:{s.http.port}"
        self.port = 0  # the data path's, once it listens
        self._beats = 0  # announcements so far: peers see a live instance's count move
        # Private sockets: the directory is only this user's (mkdtemp makes it 0700).
        self._socket_dir = Path(tempfile.mkdtemp(prefix="lb-admin-"))
        self.admin_address = f"unix:{self._socket_dir / 'admin.sock'}"
        self.internal_address = f"unix:{self._socket_dir / 'internal.sock'}"
        # The ring every request is routed on, and what happened to it.
        self.view = RingView(store, s.ring)
        self.stats = TrafficStats()
        self.movement = MovementLog(store, s.ring)
        # The leader's control plane.
        self.probe_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
            timeout=aiohttp.ClientTimeout(total=s.health.timeout_s),
        )
        self.manager = ReplicaManager(
            store,
            runtime,
            partial(
                wait_ready,
                self.probe_session,
                timeout_s=s.health.spawn_timeout_s,
                check=health_check(s.health),
            ),
            self.view.refresh,
            max_replicas=s.replicas.max_count,
            alive_ttl_s=s.health.alive_ttl_s,
            leadership=self.leadership,
            ring_settings=s.ring,
            on_commit=self.movement.committed,
        )
        self.reconciler = Reconciler(
            Policy(s.replicas.count, s.health.replace_after_s),
            self.manager,
            store,
            runtime,
            known=lambda: self.view.current.membership,
            down=lambda: self.monitor.down_since,
        )
        self.monitor = HealthMonitor(
            store, self.view, self.probe_session, s.health, on_change=self.reconciler.wake
        )
        self.view.listeners.append(lambda _old, _new: self.reconciler.wake())
        self.admin = AdminApi(
            self.manager,
            store,
            self.view,
            runtime,
            self.stats,
            leadership=self.leadership,
            relay=self.relay,
            instance_id=self.instance_id,
            admin_token=s.admin.token,
        )
        self.duties = LeaderDuties(
            self.leadership, self.reconciler, self.monitor, self.relay, self.admin.apply
        )
        # What this instance shows: metrics, liveness as it knows it.
        self.liveness = Liveness(self.view, self.leadership, self.monitor)
        self.registry = CollectorRegistry()
        self.registry.register(
            TrafficCollector(self.stats, self.view, self.liveness, self.movement)
        )
        # The data path.
        self.frontend = configured_frontend(
            self.view,
            self.stats,
            http=s.http,
            retry=s.retry,
            ejection=s.ejection,
            admin_address=self.admin_address,
        )
        self.pool = self.frontend.pool
        self.workers = WorkerSet(
            s.http.workers, self.admin_address, self.internal_address, worker_argv
        )
        self._lifecycle = Lifecycle(
            [
                ("probe session", self._probes),
                ("ring view", self._ring),
                ("admin sockets", self._sockets),
                ("leadership", self._leadership),
                ("leader duties", self._leader_duties),
                ("announcer", self._announcer),
                ("data path", self._data_path),
                ("workers", self._workers),
            ]
        )

    @classmethod
    def on(
        cls,
        settings: Settings,
        state: StateBackend,
        runtime: ReplicaRuntime,
        *,
        worker_argv: Sequence[str] = (),
    ) -> BalancerService:
        """The service over a state backend's coordinated store, leadership and relay."""
        return cls(
            settings,
            store=state.store,
            runtime=runtime,
            leadership=state.leadership,
            relay=state.relay,
            worker_argv=worker_argv,
            shared=state.shared,
        )

    async def start(self) -> None:
        """Start every component in order (those started are stopped again if one fails)."""
        try:
            await self._lifecycle.start()
        except BaseException:
            await self._close_unstarted()
            raise

    async def stop(self) -> None:
        """Stop every component in reverse order: stop accepting, stop leading (and the
        replicas, if this is the last instance), release the sockets and sessions."""
        try:
            await self._lifecycle.stop()
        finally:
            await self._close_unstarted()

    # -- components, in start order -------------------------------------------------------

    async def _probes(self) -> AsyncIterator[None]:
        yield
        await self.probe_session.close()

    async def _ring(self) -> AsyncIterator[None]:
        try:
            await self.view.refresh()
        except StoreUnavailable as exc:  # start anyway: serve 503 until the store is back
            log.error("%s; starting with an empty ring", exc)
        async with (
            _running(self.view.watch(), "ring watcher"),
            _running(self.movement.run(), "movement log"),
        ):
            yield

    async def _sockets(self) -> AsyncIterator[None]:
        admin = await _serve_unix(self._admin_app(), self.admin_address)
        try:
            internal = await _serve_unix(
                InternalApi(self.view, self.stats).app(), self.internal_address
            )
            try:
                yield
            finally:
                await internal.cleanup()
        finally:
            await admin.cleanup()

    async def _leadership(self) -> AsyncIterator[None]:
        async with _running(self.leadership.run(), "campaign"):
            try:
                yield
            finally:
                await self._retire()  # still leading: the last one out stops the replicas
        await self.leadership.release()

    async def _leader_duties(self) -> AsyncIterator[None]:
        s = self.settings
        async with _running(self.duties.run(), "leader duties"):
            with contextlib.suppress(TimeoutError):  # a follower does not wait for a slow leader
                async with asyncio.timeout(s.health.spawn_timeout_s + s.state.leader_ttl_s):
                    await self.duties.ready.wait()
            yield

    async def _announcer(self) -> AsyncIterator[None]:
        async with _running(self._announce(), "announcer"):
            yield

    async def _data_path(self) -> AsyncIterator[None]:
        http = self.settings.http
        server = await self.frontend.listen(http.host, http.port, reuse_port=http.workers > 1)
        self.port = server.sockets[0].getsockname()[1]
        log.info(
            "balancing on http://%s:%d (instance %s, admin at %s)",
            http.host,
            self.port,
            self.instance_id,
            self.admin_address,
        )
        try:
            async with _running(self.frontend.run_sweeper(), "sweeper"):
                yield
        finally:
            server.close()
            self.frontend.close_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), _CLOSE_SERVER_S)
            self.pool.close()

    async def _workers(self) -> AsyncIterator[None]:
        await self.workers.start()
        try:
            yield
        finally:
            await self.workers.stop()

    # -- what the components run --------------------------------------------------------

    def _admin_app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024, middlewares=[self.admin.middleware])
        app.router.add_routes(self.admin.routes())
        routing = RoutingApi(self.view, max_replicas=self.settings.replicas.max_count)
        app.router.add_routes(routing.routes())
        app.router.add_routes(TargetsApi(self.view).routes())
        app.router.add_routes(UiApi(self.view, self.stats).routes())
        app.router.add_get("/metrics", metrics_handler(self.registry))
        app.router.add_routes(openapi_routes())
        return app

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
            announced = True
            try:
                await self.store.announce(self.instance_id, self.status(), ttl_s)
            except StoreUnavailable:  # the ring watcher logs outages; lb_state_store_up shows it
                announced = False
            # Never raises; no round trip on a steady leader (its announcement is the check).
            self.liveness.store_up = await self.liveness.refresh(self.store) and announced
            self.frontend.hold_down(self._down())
            await asyncio.sleep(_ANNOUNCE_EVERY_S)

    def _down(self) -> set[str]:
        """Members the health checks report DOWN. None when all of them look DOWN: that is a
        gap in the checks (no leader probing yet), not a verdict on every replica."""
        members = self.view.current.ring.members
        down = {name for name in members if self.liveness.up(name) is False}
        return set() if len(down) == len(members) else down

    async def _retire(self) -> None:
        """Stop the replicas if no other instance is left to route to them. Replicas another
        system runs (``--runtime dns``) are left as they are, and so is the ring, with the
        weights and settings operators gave it."""
        if managed_by(self.runtime):
            await self.runtime.release()
            return
        if not self.shared:
            await asyncio.wait_for(self.runtime.close(), _STOP_REPLICAS_S)
            return
        try:
            await self.store.withdraw(self.instance_id)
            others = await self._live_peers()
            if others or not self.leadership.is_leader:
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

    async def _close_unstarted(self) -> None:
        """What ``__init__`` made that no component owns yet, or that outlives them all."""
        if not self.probe_session.closed:
            await self.probe_session.close()
        shutil.rmtree(self._socket_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def _running(coro: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run ``coro`` as a task for the duration of the block; cancel it and wait on exit."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _serve_unix(app: web.Application, address: str) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.UnixSite(runner, address.removeprefix("unix:")).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner

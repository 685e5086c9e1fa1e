"""Worker processes: more data-path processes on the same port (SO_REUSEPORT), one ring.

Owns the primary/worker split. The primary process owns the truth (store, supervisor, health,
admin); each worker runs only the data path and follows the primary's ring through
``PrimaryStore``, a ``MembershipSource`` that long-polls ``GET /lb/membership`` on the primary's
internal socket (``balancer.api.internal``: only workers are told its path; the public admin app
has no such route). Workers push their traffic counters to ``POST /lb/worker-stats`` there every
second so ``/metrics`` on the primary covers every process, and forward admin paths to the
primary's admin socket as the primary's data path does. A worker exits when its primary goes
away. Also owns ``quiet_gc``, which every data-path process runs once it listens.
Must not import: redis, docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

import aiohttp

from balancer.config import Settings
from balancer.http.frontend import configured_frontend
from balancer.http.stats import TrafficStats, stats_snapshot
from balancer.state.codec import membership_from_json
from balancer.state.store import Membership
from balancer.state.view import RingView

log = logging.getLogger(__name__)

ADMIN_ENV = "CHLB_WORKER_ADMIN"  # set by the primary: "unix:/path" of its admin socket
INTERNAL_ENV = "CHLB_WORKER_INTERNAL"  # and of its internal socket (membership, stats)
ID_ENV = "CHLB_WORKER_ID"


class PrimaryStore:
    """Membership as the primary process sees it (workers never write)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def membership(self) -> Membership:
        return await self._get({})

    async def wait_for_change(self, epoch: int, timeout_s: float) -> None:
        await self._get({"wait_epoch": str(epoch), "timeout_s": str(timeout_s)}, timeout_s + 5)

    async def _get(self, params: dict[str, str], timeout_s: float = 5.0) -> Membership:
        async with self._session.get(
            "http://primary/lb/membership",
            params=params,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            resp.raise_for_status()
            return membership_from_json(await resp.json())


async def run_worker(
    settings: Settings, admin_address: str, internal_address: str, worker_id: str
) -> None:
    """Serve the data path in this process until SIGTERM/SIGINT or the primary's exit."""
    connector = aiohttp.UnixConnector(path=internal_address.removeprefix("unix:"))
    async with aiohttp.ClientSession(connector=connector) as session:
        view = RingView(PrimaryStore(session), settings.ring)
        await view.refresh()
        stats = TrafficStats()
        http = settings.http
        fe = configured_frontend(
            view,
            stats,
            http=http,
            retry=settings.retry,
            ejection=settings.ejection,
            admin_address=admin_address,
        )
        server = await fe.listen(http.host, http.port, reuse_port=True)
        quiet_gc()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        tasks = [
            loop.create_task(view.watch(), name="ring watcher"),
            loop.create_task(fe.run_sweeper(), name="sweeper"),
            loop.create_task(_report(session, stats, worker_id, stop), name="stats"),
        ]
        log.info("worker %s serving on %s:%d", worker_id, http.host, http.port)
        try:
            await stop.wait()
        finally:
            server.close()
            fe.close_all()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def _report(
    session: aiohttp.ClientSession, stats: TrafficStats, worker_id: str, stop: asyncio.Event
) -> None:
    """Push counters every second; stop when the primary is gone (re-parented or unreachable)."""
    parent = os.getppid()
    failures = 0
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            stop.set()
            return
        try:
            async with session.post(
                f"http://primary/lb/worker-stats?id={worker_id}",
                data=json.dumps(stats_snapshot(stats)),
                timeout=aiohttp.ClientTimeout(total=2.0),
            ) as resp:
                await resp.read()
            failures = 0
        except (aiohttp.ClientError, TimeoutError):
            failures += 1
            if failures >= 5:
                log.error("primary unreachable for 5 s; worker exits")
                stop.set()
                return


def quiet_gc() -> None:
    """Keep garbage-collector pauses out of the request tail (every data-path process, once it
    listens).

    The data path allocates short-lived objects only (refcounting frees them), so cyclic
    collections find almost nothing; what they cost is walking the long-lived startup objects.
    Freezing those and collecting the youngest generation less often removes most of the pause
    time without letting garbage build up.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class WorkerSet:
    """The primary's handle on its worker processes."""

    def __init__(
        self, count: int, admin_address: str, internal_address: str, argv: Sequence[str]
    ) -> None:
        self._count = count
        self._env = {ADMIN_ENV: admin_address, INTERNAL_ENV: internal_address}
        self._argv = list(argv)
        self._procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        for i in range(1, self._count):
            env = {**os.environ, **self._env, ID_ENV: str(i)}
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "balancer",
                *self._argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
            )
            self._procs.append(proc)
        log.info("started %d worker process(es)", len(self._procs))

    async def stop(self) -> None:
        for proc in self._procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._procs.clear()

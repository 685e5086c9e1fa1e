"""InProcessRuntime: the in-memory ``ReplicaRuntime``, serving replica apps from the test's loop.

Each replica is a real aiohttp app on a real loopback socket (port 0), so the balancer talks
real HTTP to it; ``crash`` closes it abruptly to simulate a replica failure. The apps run on a
``ReplicaHost`` (the "machine"): runtimes that share one can adopt each other's replicas by
locator, as a restarted balancer adopts the processes its predecessor left running. A runtime
given no host makes its own and closes it with itself, so nothing it started (released replicas
included) outlives it in a test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from aiohttp import web

from balancer.errors import RuntimeFailure
from balancer.runtimes.base import Description, ReplicaHandle
from server.app import create_app as create_replica_app

AppFactory = Callable[[str], web.Application]


class ReplicaHost:
    """Replica apps served in this loop, by locator (``inproc-<n>``), whoever started them."""

    def __init__(self) -> None:
        self.runners: dict[str, web.AppRunner] = {}
        self._serial = itertools.count(1)

    async def serve(self, app: web.Application) -> tuple[str, web.AppRunner, int]:
        """Serve ``app`` on a loopback port: (locator, runner, port)."""
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        locator = f"inproc-{next(self._serial)}"
        self.runners[locator] = runner
        return locator, runner, runner.addresses[0][1]

    async def kill(self, locator: str) -> None:
        """The replica dies (its socket closes), whichever runtime tracks it."""
        runner = self.runners.pop(locator, None)
        if runner is not None:
            await _cleanup(runner)

    async def close(self) -> None:
        for locator in list(self.runners):
            await self.kill(locator)


class InProcessRuntime:
    def __init__(
        self, app_factory: AppFactory = create_replica_app, *, host: ReplicaHost | None = None
    ) -> None:
        self._factory = app_factory
        self._owns_host = host is None
        self.host = host if host is not None else ReplicaHost()
        self._runners: dict[str, tuple[ReplicaHandle, web.AppRunner]] = {}
        self.spawned: list[str] = []
        self.stopped: list[str] = []
        self.fail_next_spawns = 0

    async def spawn(self, name: str, server_id: str) -> ReplicaHandle:
        if self.fail_next_spawns > 0:
            self.fail_next_spawns -= 1
            raise RuntimeFailure(f"injected spawn failure for {name}")
        if name in self._runners:
            raise RuntimeFailure(f"replica {name!r} is already running")
        locator, runner, port = await self.host.serve(self._factory(server_id))
        handle = ReplicaHandle(name, server_id, f"127.0.0.1:{port}", locator)
        self._runners[name] = (handle, runner)
        self.spawned.append(name)
        return handle

    async def stop(self, name: str, *, force: bool = False) -> None:
        entry = self._runners.pop(name, None)
        if entry is not None:
            handle, runner = entry
            if self.host.runners.get(handle.locator) is runner:
                del self.host.runners[handle.locator]
            await _cleanup(runner)
            self.stopped.append(name)

    async def crash(self, name: str) -> None:
        """Make a replica vanish (its socket closes) without telling the balancer."""
        handle, runner = self._runners.pop(name)
        self.host.runners.pop(handle.locator, None)
        await _cleanup(runner)

    async def adopt(self, handle: ReplicaHandle) -> bool:
        if handle.name in self._runners:
            return self._runners[handle.name][1].server is not None
        runner = self.host.runners.get(handle.locator)
        if runner is None:
            return False
        self._runners[handle.name] = (handle, runner)
        return True

    async def list(self) -> list[ReplicaHandle]:
        return [handle for handle, runner in self._runners.values() if runner.server is not None]

    def describe(self, handle: ReplicaHandle) -> Description:
        return {}

    async def release(self) -> None:
        """Stop tracking; the replicas keep running on the host (another runtime may adopt)."""
        self._runners.clear()

    async def close(self) -> None:
        for name in list(self._runners):
            await self.stop(name)
        if self._owns_host:
            await self.host.close()


async def _cleanup(runner: web.AppRunner) -> None:
    if runner.server is not None:  # not cleaned up yet
        await runner.cleanup()

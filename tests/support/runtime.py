"""InProcessRuntime: the in-memory ``ReplicaRuntime``, serving replica apps from the test's loop.

Each replica is a real aiohttp app on a real loopback socket (port 0), so the balancer talks
real HTTP to it; ``crash`` closes it abruptly to simulate a replica failure.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from balancer.runtimes.base import ReplicaHandle
from server.app import create_app as create_replica_app

AppFactory = Callable[[str], web.Application]


class InProcessRuntime:
    def __init__(self, app_factory: AppFactory = create_replica_app) -> None:
        self._factory = app_factory
        self._runners: dict[str, tuple[ReplicaHandle, web.AppRunner]] = {}
        self.spawned: list[str] = []
        self.stopped: list[str] = []
        self.fail_next_spawns = 0

    async def spawn(self, name: str, server_id: str) -> ReplicaHandle:
        from balancer.errors import RuntimeFailure

        if self.fail_next_spawns > 0:
            self.fail_next_spawns -= 1
            raise RuntimeFailure(f"injected spawn failure for {name}")
        runner = web.AppRunner(self._factory(server_id), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        handle = ReplicaHandle(name, server_id, f"127.0.0.1:{port}")
        self._runners[name] = (handle, runner)
        self.spawned.append(name)
        return handle

    async def stop(self, name: str, *, force: bool = False) -> None:
        entry = self._runners.pop(name, None)
        if entry is not None:
            await entry[1].cleanup()
            self.stopped.append(name)

    async def crash(self, name: str) -> None:
        """Make a replica vanish (its socket closes) without telling the balancer."""
        entry = self._runners.pop(name)
        await entry[1].cleanup()

    async def adopt(self, handle: ReplicaHandle) -> bool:
        return handle.name in self._runners

    async def list(self) -> list[ReplicaHandle]:
        return [handle for handle, _ in self._runners.values()]

    async def release(self) -> None:
        """Replicas live in the test's loop: nothing to hand over; the test closes them."""

    async def close(self) -> None:
        for name in list(self._runners):
            await self.stop(name)

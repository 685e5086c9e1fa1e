"""The Swarm runtime's contract harness (``tests/runtimes/conftest.py`` picks it up).

Replicas are services of the replica image on a network of the test's own. The host cannot
reach an overlay network's addresses, so the harness's network is a swarm-scoped *bridge*
network (``docker network create --scope=swarm --driver=bridge --attachable``): Swarm schedules
services onto it like onto an overlay, and the runtime reads a task's address from its container
on this node (``balancer.runtimes.swarm``); the overlay path runs in ``tests/swarm``. A daemon in
no swarm is made a manager for the session (``tests/support/swarm_manager.py``); skipped with the
reason when it is in a swarm without being a manager. Every service carries the test's deployment
label, and teardown force-removes by that label.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from balancer.runtimes.base import Description, ReplicaHandle, ReplicaRuntime
from balancer.runtimes.swarm import SwarmRuntime, service_name
from tests.runtimes.conftest import Harness

IMAGE = "chlb-server:latest"


class SwarmHarness(Harness):
    """Docker's departures (``engine_keeps_record``): the swarm keeps the record."""

    name = "swarm"
    engine_keeps_record = True
    ready_s = 30.0

    def __init__(self, client: Any, network: str) -> None:
        super().__init__()
        self.client = client
        self.network = network
        self.deployment = f"t{uuid.uuid4().hex[:8]}"
        self.containers: dict[str, str] = {}  # service id → its task's container id

    def _make(self) -> ReplicaRuntime:
        return SwarmRuntime(
            self.client,
            image=IMAGE,
            network=self.network,
            deployment=self.deployment,
            start_timeout_s=60.0,
        )

    async def spawn(self, runtime: ReplicaRuntime, name: str, server_id: str) -> ReplicaHandle:
        handle = await super().spawn(runtime, name, server_id)
        self.containers[handle.locator] = await asyncio.to_thread(self._container_id, handle)
        return handle

    def _container_id(self, handle: ReplicaHandle) -> str:
        (task,) = self.client.api.tasks(filters={"service": handle.locator})
        return str(task["Status"]["ContainerStatus"]["ContainerID"])

    async def kill(self, handle: ReplicaHandle) -> None:
        cid = self.containers[handle.locator]
        await asyncio.to_thread(lambda: self.client.containers.get(cid).kill())

    async def runs(self, handle: ReplicaHandle) -> bool:
        import docker

        def running() -> bool:
            try:
                container = self.client.containers.get(self.containers[handle.locator])
            except docker.errors.NotFound:
                return False
            return bool(container.status == "running")

        return await asyncio.to_thread(running)

    def check_description(self, handle: ReplicaHandle, described: Description) -> None:
        assert set(described) == {"service"}
        service = self.client.services.get(handle.locator)
        assert service.id.startswith(str(described["service"]))
        assert len(str(described["service"])) == 12
        assert service.name == service_name(self.deployment, handle.server_id)
        assert service.attrs["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await asyncio.to_thread(self._remove_by_label)

    def _remove_by_label(self) -> None:
        label = f"chlb.deployment={self.deployment}"
        for service in self.client.services.list(filters={"label": label}):
            with contextlib.suppress(Exception):
                service.remove()


def swarm_network_of(client: Any) -> Iterator[str]:
    """A swarm-scoped bridge network the host reaches; a skip when this daemon is no manager."""
    info = client.info().get("Swarm", {})
    if info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
        pytest.skip("the Docker daemon is not a swarm manager (docker swarm init)")
    name = f"chlb-swarm-{uuid.uuid4().hex[:8]}"
    network = client.networks.create(name, driver="bridge", scope="swarm", attachable=True)
    yield name
    for service in client.services.list():
        if any(n.get("Target") == network.id for n in _networks(service)):
            with contextlib.suppress(Exception):
                service.remove()
    for _ in range(40):  # the services' containers leave the network a moment later
        try:
            network.remove()
            return
        except Exception:
            time.sleep(0.5)


def _networks(service: Any) -> list[dict[str, Any]]:
    spec = service.attrs["Spec"]
    found: list[dict[str, Any]] = spec.get("TaskTemplate", {}).get("Networks") or []
    return found

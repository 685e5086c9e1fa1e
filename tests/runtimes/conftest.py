"""One harness per runtime, so the contract's test bodies run unchanged over every runtime.

A harness makes runtime objects on one "machine" (a second object stands for the balancer after
a restart), makes a replica die behind the runtime's back, says whether a replica still runs
(asking the machine, never the runtime under test), and states where its runtime departs from
the contract's strongest form (the flags; see ``balancer.runtimes.base.ReplicaRuntime``).
Replicas: real ``python -m server`` processes (process), replica apps in the test's loop
(in-process, and the backends of the static runtime, which the test starts itself), containers
of the replica image on a network of the test's own (Docker: skipped with the reason when there
is no daemon or no image; every container carries the test's deployment label, and teardown
force-removes by that label), services of that image (Swarm: ``swarm_harness``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from balancer.control.health import wait_ready
from balancer.runtimes.base import Description, ReplicaHandle, ReplicaRuntime
from balancer.runtimes.process import ProcessRuntime
from balancer.runtimes.static import StaticRuntime
from server.app import create_app as create_replica_app
from tests.support.runtime import InProcessRuntime, ReplicaHost

DOCKER_IMAGE = "chlb-server:latest"


class Harness:
    """The process runtime's form of the contract; subclasses state their runtime's departures."""

    name = ""
    owns_replicas = True  # stop/close end the replica itself (static: only the routing to it)
    watches_replicas = True  # a replica that dies on its own leaves ``list`` (static: it stays)
    engine_keeps_record = False  # ``list`` is the engine's, whoever started (Docker's daemon)
    ready_s = 15.0  # how long a new replica may take to answer

    def __init__(self) -> None:
        self.runtimes: list[ReplicaRuntime] = []
        self.handles: list[ReplicaHandle] = []  # every replica spawned: teardown's sweep

    async def spawn(self, runtime: ReplicaRuntime, name: str, server_id: str) -> ReplicaHandle:
        """``runtime.spawn``, then wait until the replica answers its first health check."""
        handle = await runtime.spawn(name, server_id)
        self.handles.append(handle)
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, handle.address, self.ready_s)
        return handle

    def new_runtime(self) -> ReplicaRuntime:
        """A runtime object on this machine (a second one: the balancer after a restart)."""
        runtime = self._make()
        self.runtimes.append(runtime)
        return runtime

    def _make(self) -> ReplicaRuntime:
        raise NotImplementedError

    def home_id(self, handle: ReplicaHandle) -> str:
        """The server id the replica answers ``GET /home`` with."""
        return handle.server_id

    async def kill(self, handle: ReplicaHandle) -> None:
        """The replica dies on its own, behind its runtime's back."""
        raise NotImplementedError

    async def runs(self, handle: ReplicaHandle) -> bool:
        """Whether the replica itself still runs, asking the machine, not the runtime."""
        raise NotImplementedError

    def check_description(self, handle: ReplicaHandle, described: Description) -> None:
        assert described == {}

    async def close(self) -> None:
        for runtime in self.runtimes:
            await runtime.close()


class ProcessHarness(Harness):
    name = "process"

    def _make(self) -> ReplicaRuntime:
        return ProcessRuntime(stop_grace_s=2.0)

    def pid(self, handle: ReplicaHandle) -> int:
        pid = ProcessRuntime().describe(handle)["pid"]
        assert isinstance(pid, int)
        return pid

    async def kill(self, handle: ReplicaHandle) -> None:
        os.kill(self.pid(handle), signal.SIGKILL)

    async def runs(self, handle: ReplicaHandle) -> bool:
        return _proc_state(self.pid(handle)) not in (None, "Z", "X")

    def check_description(self, handle: ReplicaHandle, described: Description) -> None:
        assert set(described) == {"pid"}
        pid = described["pid"]
        assert isinstance(pid, int)
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
        assert f"SERVER_ID={handle.server_id}".encode() in environ

    async def close(self) -> None:
        await super().close()
        sweeper = ProcessRuntime(stop_grace_s=1.0)  # released replicas outlive their runtime
        for handle in self.handles:
            with contextlib.suppress(Exception):
                if await sweeper.adopt(handle):
                    await sweeper.stop(handle.name, force=True)


def _proc_state(pid: int) -> str | None:
    """The state letter of process ``pid`` (R, S, Z…), None when there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


class InProcessHarness(Harness):
    name = "in-process"

    def __init__(self) -> None:
        super().__init__()
        self.host = ReplicaHost()

    def _make(self) -> ReplicaRuntime:
        return InProcessRuntime(host=self.host)

    async def kill(self, handle: ReplicaHandle) -> None:
        await self.host.kill(handle.locator)  # the host's own key for the app it serves

    async def runs(self, handle: ReplicaHandle) -> bool:
        return handle.locator in self.host.runners

    async def close(self) -> None:
        await super().close()
        await self.host.close()


class StaticHarness(Harness):
    """Three backends the test serves itself (replica apps with their own server ids)."""

    name = "static"
    owns_replicas = False
    watches_replicas = False

    def __init__(self) -> None:
        super().__init__()
        self.host = ReplicaHost()
        self.backends: dict[str, tuple[str, str]] = {}  # address → (server id, host key)

    async def start(self, count: int = 3) -> None:
        for i in range(1, count + 1):
            backend_id = f"backend-{i}"
            key, _, port = await self.host.serve(create_replica_app(backend_id))
            self.backends[f"127.0.0.1:{port}"] = (backend_id, key)

    def _make(self) -> ReplicaRuntime:
        return StaticRuntime(list(self.backends))

    def home_id(self, handle: ReplicaHandle) -> str:
        return self.backends[handle.address][0]  # the backend is who it is, whatever the name

    async def kill(self, handle: ReplicaHandle) -> None:
        await self.host.kill(self.backends[handle.address][1])

    async def runs(self, handle: ReplicaHandle) -> bool:
        return self.backends[handle.address][1] in self.host.runners

    async def close(self) -> None:
        await super().close()
        await self.host.close()


class DockerHarness(Harness):
    name = "docker"
    engine_keeps_record = True
    ready_s = 30.0

    def __init__(self, client: Any, network: str) -> None:
        super().__init__()
        self.client = client
        self.network = network
        self.deployment = f"t{uuid.uuid4().hex[:8]}"

    def _make(self) -> ReplicaRuntime:
        from balancer.runtimes.docker import DockerRuntime

        return DockerRuntime(
            self.client, image=DOCKER_IMAGE, network=self.network, deployment=self.deployment
        )

    def _container(self, handle: ReplicaHandle) -> Any:
        described = self.runtimes[0].describe(handle) if self.runtimes else {}
        return self.client.containers.get(str(described["container"]))

    async def kill(self, handle: ReplicaHandle) -> None:
        await asyncio.to_thread(lambda: self._container(handle).kill())

    async def runs(self, handle: ReplicaHandle) -> bool:
        import docker

        def running() -> bool:
            try:
                return bool(self._container(handle).status == "running")
            except docker.errors.NotFound:
                return False

        return await asyncio.to_thread(running)

    def check_description(self, handle: ReplicaHandle, described: Description) -> None:
        assert set(described) == {"container"}
        container = self.client.containers.get(str(described["container"]))
        assert container.short_id == described["container"]
        assert container.name == f"{self.deployment}-{handle.server_id}"

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await asyncio.to_thread(self._remove_by_label)

    def _remove_by_label(self) -> None:
        label = f"chlb.deployment={self.deployment}"
        for container in self.client.containers.list(all=True, filters={"label": label}):
            with contextlib.suppress(Exception):
                container.remove(force=True)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A client of the local daemon with the replica image, or a skip that says what is missing."""
    docker = pytest.importorskip("docker")
    reason = ""
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # no daemon here: CI starts one (infra/docker/ensure-docker.sh)
        reason = f"no Docker daemon: {exc}"
    if reason:
        with warnings.catch_warnings():  # the SDK's failed version check leaves its socket
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        pytest.skip(reason)
    try:
        client.images.get(DOCKER_IMAGE)
    except docker.errors.ImageNotFound:
        client.close()
        pytest.skip(f"image {DOCKER_IMAGE} not built (infra/docker/build-images.sh)")
    yield client
    client.close()


@pytest.fixture
def docker_network(docker_client: Any) -> Iterator[str]:
    name = f"chlb-contract-{uuid.uuid4().hex[:8]}"
    network = docker_client.networks.create(name, driver="bridge")
    yield name
    for container in docker_client.containers.list(all=True, filters={"network": name}):
        container.remove(force=True)
    network.remove()


@pytest.fixture(scope="session")
def swarm_client(docker_client: Any) -> Iterator[Any]:
    """``docker_client``'s daemon as a swarm manager (``docker swarm init`` if it is in none)."""
    from tests.support.swarm_manager import swarm_manager

    with swarm_manager(docker_client):
        yield docker_client


@pytest.fixture
def swarm_network(swarm_client: Any) -> Iterator[str]:
    from tests.runtimes.swarm_harness import swarm_network_of

    yield from swarm_network_of(swarm_client)


# Every runtime the registry knows, plus the test suite's in-process one. A runtime added to
# balancer.runtimes.registry without a harness here fails test_every_registered_runtime_...
HARNESSED = ("process", "static", "docker", "swarm", "dns")


@pytest.fixture(
    params=[
        *(
            pytest.param(n, marks=pytest.mark.docker) if n in ("docker", "swarm") else n
            for n in HARNESSED
        ),
        "in-process",
    ]
)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """Each contract test once per runtime."""
    made: Harness
    if request.param == "process":
        made = ProcessHarness()
    elif request.param == "in-process":
        made = InProcessHarness()
    elif request.param == "static":
        made = StaticHarness()
        await made.start()
    elif request.param == "dns":
        from tests.runtimes.dns_harness import DnsHarness

        made = DnsHarness()
    elif request.param == "swarm":
        from tests.runtimes.swarm_harness import SwarmHarness

        made = SwarmHarness(
            request.getfixturevalue("docker_client"), request.getfixturevalue("swarm_network")
        )
    elif request.param == "docker":
        made = DockerHarness(
            request.getfixturevalue("docker_client"), request.getfixturevalue("docker_network")
        )
    else:
        raise AssertionError(f"no contract harness for the {request.param!r} runtime")
    try:
        yield made
    finally:
        await made.close()

"""DockerRuntime against a real daemon: containers on a network the test creates.

Needs a running dockerd and the replica image (``infra/docker/ensure-docker.sh`` and the
offline build, as ``.ci/run`` does); skips with the reason otherwise. Traffic goes only to the
containers this test created, at their addresses on its own network.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

docker = pytest.importorskip("docker")

from balancer.runtimes.docker import LABEL_DEPLOYMENT, DockerRuntime  # noqa: E402

pytestmark = pytest.mark.docker
IMAGE = "chlb-server:latest"


@pytest.fixture
def client(docker_client: Any) -> Any:
    try:
        docker_client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"image {IMAGE} not built (make images / infra/docker/build-images.sh)")
    return docker_client


@pytest.fixture
def network(client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = f"chlb-test-{uuid.uuid4().hex[:8]}"
    net = client.networks.create(name, driver="bridge")
    yield name
    for container in client.containers.list(all=True, filters={"network": name}):
        container.remove(force=True)
    net.remove()


@pytest.fixture
async def runtime(client, network: str) -> AsyncIterator[DockerRuntime]:  # type: ignore[no-untyped-def]
    deployment = f"t{uuid.uuid4().hex[:6]}"
    rt = DockerRuntime(client, image=IMAGE, network=network, deployment=deployment)
    yield rt
    await rt.close()


def container_ip(client, name: str, network: str) -> str:  # type: ignore[no-untyped-def]
    c = client.containers.get(name)
    return str(c.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])


async def get_home(ip: str, timeout_s: float = 20.0) -> dict:  # type: ignore[type-arg]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://{ip}:5000/home", timeout=1).read()
            )
            return json.loads(body)  # type: ignore[no-any-return]
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_spawned_replica_is_a_labelled_container_on_the_network(
    client, network: str, runtime: DockerRuntime
) -> None:  # type: ignore[no-untyped-def]
    handle = await runtime.spawn("Server 7a", "7a")
    name = f"{runtime._deployment}-7a"
    container = client.containers.get(name)
    # The balancer connects by IP on the network (no DNS on the data path).
    assert handle.address == f"{container_ip(client, name, network)}:5000"
    assert container.labels[LABEL_DEPLOYMENT] == runtime._deployment
    assert container.attrs["Config"]["Hostname"] == name
    assert name in container.attrs["NetworkSettings"]["Networks"][network]["Aliases"]
    assert not container.attrs["HostConfig"]["PortBindings"]  # nothing published on the host
    answer = await get_home(container_ip(client, name, network))
    assert answer == {"message": "Hello from Server: 7a", "status": "successful"}
    assert [h.name for h in await runtime.list()] == ["Server 7a"]


async def test_another_runtime_adopts_and_stops_a_replica(
    client, network: str, runtime: DockerRuntime
) -> None:  # type: ignore[no-untyped-def]
    handle = await runtime.spawn("S1", "S1")
    successor = DockerRuntime(client, image=IMAGE, network=network, deployment=runtime._deployment)
    assert await successor.adopt(handle)
    assert [h.name for h in await successor.list()] == ["S1"]
    await successor.stop("S1")
    assert await runtime.list() == []
    assert not client.containers.list(
        all=True, filters={"id": str(runtime.describe(handle)["container"])}
    )


async def test_other_deployments_are_invisible(
    client, network: str, runtime: DockerRuntime
) -> None:  # type: ignore[no-untyped-def]
    other = DockerRuntime(
        client, image=IMAGE, network=network, deployment="other" + uuid.uuid4().hex[:4]
    )
    await other.spawn("S2", "S2")
    try:
        assert await runtime.list() == []
        assert not await runtime.adopt((await other.list())[0])
        await runtime.stop("S2")  # not ours: left alone
        assert [h.name for h in await other.list()] == ["S2"]
    finally:
        await other.close()


async def test_a_crashed_containers_name_can_be_reused(
    client, network: str, runtime: DockerRuntime
) -> None:  # type: ignore[no-untyped-def]
    handle = await runtime.spawn("S3", "S3")
    client.containers.get(runtime.describe(handle)["container"]).kill()
    assert await runtime.list() == []  # exited: not running
    again = await runtime.spawn("S3", "S3")  # the exited container is removed first
    assert [h.name for h in await runtime.list()] == ["S3"]
    assert again.locator != handle.locator

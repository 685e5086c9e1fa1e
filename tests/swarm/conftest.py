"""Fixtures of the Swarm tests: a manager's client, the images, a deployment of the balancers.

``swarm_client`` skips with the reason when there is no daemon or no image. When the daemon is
not in a swarm it runs ``docker swarm init --advertise-addr 127.0.0.1`` and leaves the swarm at
the end of the session, and only then (a swarm it did not make is left as it was).
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.ports import free_port
from tests.support.swarm_manager import swarm_manager
from tests.swarm.deployment import (
    BALANCER_BASE,
    SERVER_IMAGE,
    SwarmDeployment,
    build_balancer_image,
    redis_image,
    wait_ready,
)

docker = pytest.importorskip("docker")

READY_TIMEOUT_S = 120.0


def _client_or_reason() -> tuple[Any, str]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # no daemon here: CI starts one (infra/docker/ensure-docker.sh)
        with warnings.catch_warnings():  # the SDK's failed version check leaves its socket
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        return None, f"no Docker daemon: {exc}"
    for image in (SERVER_IMAGE, BALANCER_BASE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            client.close()
            return None, f"image {image} not built (OFFLINE=1 infra/docker/build-images.sh)"
    return client, ""


@pytest.fixture(scope="session")
def swarm_client() -> Iterator[Any]:
    """A client of a swarm manager; the swarm is initialised here if there was none."""
    client, reason = _client_or_reason()
    if client is None:
        pytest.skip(reason)
    try:
        with swarm_manager(client):
            yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def balancer_image(swarm_client: Any) -> str:
    return build_balancer_image(swarm_client)


@pytest.fixture(scope="session")
def redis_image_name(swarm_client: Any) -> str:
    image = redis_image(swarm_client)
    if image is None:
        pytest.skip("no Redis image (redis:7, or chlb-base:offline from build-images.sh)")
    return image


@pytest.fixture(scope="module")
def deployment(swarm_client: Any, balancer_image: str, redis_image_name: str) -> Iterator[Any]:
    """Redis and two balancers (lb-a, lb-b) on an overlay of their own; N=3 on both."""
    dep = SwarmDeployment(
        swarm_client, {"lb-a": free_port(), "lb-b": free_port()}, redis_image_name
    )
    left: list[str] = []
    try:
        dep.up()
        dep.ready_s = wait_ready(dep, 3, READY_TIMEOUT_S)
        yield dep
    finally:
        left = dep.down()
    assert not left, f"replica services left after the balancers were removed: {left}"

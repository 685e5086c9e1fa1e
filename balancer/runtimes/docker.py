"""Replicas as Docker containers on one network (the docker-compose deployment).

Owns ``DockerRuntime``. Each replica is a container of ``image`` named ``<deployment>-<id>``
(``Server 3fa91c`` → ``chlb-3fa91c``); that name is also its hostname and its alias on
``network``. The balancer connects to its IP address on that network, not its name: a lookup
of a container that is gone goes to Docker's DNS and on to the host's resolver, and where that
resolver hangs, the lookups fill the event loop's getaddrinfo threads and stall every other
connection (health probes included). No host port is published. Every container carries labels
with the deployment and the replica's name, so the daemon itself says which containers are
ours: ``list`` asks it (containers another leader started included), ``stop`` finds a container
by label even if this instance never tracked it, and a new leader adopts by label. Every SDK
call is blocking and runs on the runtime's own threads (``EngineCalls``, not the loop's default
executor) with the client's own timeout; an engine or HTTP error becomes ``RuntimeFailure``.
A handle's ``locator`` is the container id; ``describe`` shows its short form. Where it departs
from the runtime contract (``tests/runtimes``): the daemon, not this object, keeps the record,
so ``list`` is every running container of the deployment (whoever started it), ``release``
changes nothing, and ``close`` stops every container of the deployment. The SDK is imported
where it is first called, not with this module: ``balancer.config`` reads ``DockerSettings``
from here, and parsing the settings must not load the SDK.
Must not import: aiohttp, redis.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from balancer.runtimes.base import Description, ReplicaHandle
from balancer.runtimes.engine_calls import EngineCalls
from balancer.setting import check, positive, setting

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

log = logging.getLogger(__name__)

LABEL_DEPLOYMENT = "chlb.deployment"
LABEL_NAME = "chlb.replica"
LABEL_SERVER_ID = "chlb.server-id"

Containers = list["Container"]  # (inside the class, ``list`` is the method)


def _errors() -> Any:
    """``docker.errors``, imported on first use (see the module docstring): an ``except``
    clause evaluates it only when an exception is raised, after an SDK call loaded it."""
    import docker.errors

    return docker.errors


def container_name(deployment: str, server_id: str) -> str:
    return f"{deployment}-{server_id}"


class DockerRuntime:
    """See the module docstring."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        image: str,
        network: str,
        deployment: str = "chlb",
        port: int = 5000,
        stop_grace_s: int = 3,
    ) -> None:
        self._client = client
        self._image = image
        self._network = network
        self._deployment = deployment
        self._port = port
        self._stop_grace_s = stop_grace_s
        self._calls = EngineCalls("docker")

    async def spawn(self, name: str, server_id: str) -> ReplicaHandle:
        cname = container_name(self._deployment, server_id)
        what = f"cannot start replica {name!r}"
        container = await self._calls.run(what, self._run, cname, name, server_id)
        log.info("started container %s (%s) for replica %s", cname, container.short_id, name)
        return self._handle(container)

    async def stop(self, name: str, *, force: bool = False) -> None:
        await self._calls.run(f"cannot stop replica {name!r}", self._remove, name, force)

    async def adopt(self, handle: ReplicaHandle) -> bool:
        container = await self._calls.run(
            f"cannot look up replica {handle.name!r}", self._find, handle.name
        )
        return container is not None and container.status == "running"

    async def list(self) -> list[ReplicaHandle]:
        containers = await self._calls.run("cannot list replicas", self._ours, False)
        return [self._handle(c) for c in containers]

    def describe(self, handle: ReplicaHandle) -> Description:
        return {"container": handle.locator[:12]} if handle.locator else {}

    async def release(self) -> None:
        """Nothing to hand over: the daemon, not this process, keeps track of the containers."""

    async def close(self) -> None:
        for handle in await self.list():
            await self.stop(handle.name)

    # -- blocking helpers (run in a thread) -----------------------------------------------

    def _run(self, cname: str, name: str, server_id: str) -> Container:
        self._remove_stale(cname)
        endpoint = self._client.api.create_endpoint_config(aliases=[cname])
        container: Container = self._client.containers.run(
            self._image,
            name=cname,
            hostname=cname,
            detach=True,
            environment={"SERVER_ID": server_id},
            labels={
                LABEL_DEPLOYMENT: self._deployment,
                LABEL_NAME: name,
                LABEL_SERVER_ID: server_id,
            },
            network=self._network,
            networking_config={self._network: endpoint},
        )
        container.reload()  # the address on the network is known once it started
        return container

    def _remove_stale(self, cname: str) -> None:
        """A stopped container of ours with the same name (a crash we never cleaned) goes."""
        try:
            old = self._client.containers.get(cname)
        except _errors().NotFound:
            return
        if old.labels.get(LABEL_DEPLOYMENT) == self._deployment and old.status != "running":
            old.remove(force=True)

    def _remove(self, name: str, force: bool) -> None:
        container = self._find(name, running_only=False)
        if container is None:
            return
        try:
            if force:
                container.remove(force=True)
            else:
                container.stop(timeout=self._stop_grace_s)
                container.remove(force=True)
        except _errors().NotFound:
            return  # gone meanwhile
        except _errors().APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise
        log.info("removed container %s of replica %s", container.name, name)

    def _find(self, name: str, *, running_only: bool = True) -> Container | None:
        for container in self._ours(not running_only):
            if container.labels.get(LABEL_NAME) == name:
                return container
        return None

    def _ours(self, include_stopped: bool) -> Containers:
        found: Containers = self._client.containers.list(
            all=include_stopped, filters={"label": f"{LABEL_DEPLOYMENT}={self._deployment}"}
        )
        return found

    def _handle(self, container: Container) -> ReplicaHandle:
        labels: dict[str, Any] = container.labels
        cname = str(container.name)
        networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
        ip = (networks.get(self._network) or {}).get("IPAddress") or cname
        return ReplicaHandle(
            str(labels.get(LABEL_NAME, cname)),
            str(labels.get(LABEL_SERVER_ID, "")),
            f"{ip}:{self._port}",
            str(container.id),
        )


# -- configuration: the section and factory balancer.runtimes.registry names ------------------


@dataclass(frozen=True)
class DockerSettings:
    """Replicas as Docker containers on one network, through the Docker socket."""

    image: str = setting(
        "chlb-server:latest", "docker_image", "image of the replica containers (runtime=docker)"
    )
    network: str = setting(
        "net1", "docker_network", "Docker network the replicas join; the balancer must be on it too"
    )
    deployment: str = setting(
        "chlb",
        "docker_deployment",
        "label value and name prefix that mark this deployment's containers",
    )
    timeout_s: float = setting(
        30.0, "docker_timeout_s", "seconds any single Docker API call may take"
    )

    def __post_init__(self) -> None:
        check(positive(self, "timeout_s"))


def docker_runtime(settings: DockerSettings) -> DockerRuntime:
    """The registry's factory: a client of the daemon the environment names (``DOCKER_HOST``,
    else the local socket), each call bounded by ``settings.timeout_s``."""
    import docker  # the SDK, in the Docker deployment only

    return DockerRuntime(
        docker.from_env(timeout=int(settings.timeout_s)),
        image=settings.image,
        network=settings.network,
        deployment=settings.deployment,
    )

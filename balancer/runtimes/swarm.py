"""Replicas as Docker Swarm services: one service per replica, anywhere in the swarm.

Owns ``SwarmRuntime``. Each replica is a replicated service of ``image`` with exactly one task,
named ``<deployment>-<id>`` (``Server 3fa91c`` → ``chlb-3fa91c``), on an attachable ``network``
(an overlay in production) where the service name is also its DNS alias. The engine places the
task on any node that meets the placement ``constraints``, and every manager sees every service,
so a leader elected on another host lists, adopts and stops what the previous leader started.

Why one service per replica, with Swarm's restart policy off (``condition: none``): the contract
names replicas (``/rm <name>`` removes that one) and the leader replaces a failed replica under
a new random name (its keys move once, by the ring's rules). A single service scaled to N would
have Swarm restart failed tasks under the same slot behind the leader's back and pick which task
goes on a scale-down; so here a failed task stays failed, its service drops out of ``list``, the
health checks evict it and the leader starts a new service.

Labels on the service mark the deployment, the replica's name and its server id, so ``list``,
``adopt``, ``stop`` and stray removal ask the Swarm API (services by label, then their tasks'
state). A replica runs while its one task is ``running``; its address is the task's IP on
``network`` (from the task's network attachment on an overlay, or, on a swarm-scoped bridge
network, from the task's container when it runs on this node), the service name when neither is
known. ``spawn`` waits (bounded by ``start_timeout_s``) until the task runs with an address, not
until the replica answers; it fails early when the task ends or its node goes down (a node
that just failed can still be given the replacement of its own replica). A handle's
``locator`` is the service id; ``describe`` shows its short form as ``service``. Where it
departs from the runtime contract (``tests/runtimes``): as with Docker, the engine keeps the
record, so ``list`` is every running service of the deployment (whoever started it),
``release`` changes nothing and ``close`` stops every service of the deployment. ``stop``
scales the service to 0 and waits (bounded) for its task to stop (SIGTERM, SIGKILL after the
grace period) before removing the service; ``force`` removes it at once. Either way Swarm first
waits ~2 s for its gossip to converge, so a stopped replica answers that much longer.
Every SDK call is blocking and runs on the runtime's own threads (``EngineCalls``, not the
loop's default executor) with the client's own timeout; an engine or HTTP error becomes
``RuntimeFailure``. The SDK is imported where it is first called (see ``balancer.runtimes.docker``).
Must not import: aiohttp, redis.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from balancer.errors import RuntimeFailure
from balancer.runtimes.base import Description, ReplicaHandle
from balancer.runtimes.docker import LABEL_DEPLOYMENT, LABEL_NAME, LABEL_SERVER_ID, _errors
from balancer.runtimes.engine_calls import EngineCalls
from balancer.setting import check, comma_list, positive, setting

if TYPE_CHECKING:
    import docker
    from docker.models.services import Service

log = logging.getLogger(__name__)

Task = dict[str, Any]  # a task as the Swarm API returns it
Tasks = list[Task]  # (inside the class, ``list`` is the method)
Services = list["Service"]
Handles = list[ReplicaHandle]
_POLL_S = 0.25  # how often spawn and stop look at a task's state again
_NODE_EVERY = 4  # spawn asks for the state of a starting task's node every 4th poll
_ENDED = frozenset({"complete", "shutdown", "failed", "rejected", "orphaned", "remove"})


def service_name(deployment: str, server_id: str) -> str:
    return f"{deployment}-{server_id}"


class SwarmRuntime:
    """See the module docstring."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        image: str,
        network: str,
        deployment: str = "chlb",
        constraints: tuple[str, ...] = (),
        port: int = 5000,
        stop_grace_s: float = 3.0,
        start_timeout_s: float = 60.0,
    ) -> None:
        self._client = client
        self._api: Any = client.api  # (the stubs leave the low-level calls untyped)
        self._image = image
        self._network = network
        self._deployment = deployment
        self._constraints = list(constraints)
        self._port = port
        self._stop_grace_s = stop_grace_s
        self._start_timeout_s = start_timeout_s
        self._calls = EngineCalls("swarm")

    async def spawn(self, name: str, server_id: str) -> ReplicaHandle:
        sname = service_name(self._deployment, server_id)
        what = f"cannot start replica {name!r}"
        handle = await self._calls.run(what, self._create, sname, name, server_id)
        log.info("started service %s (%s) for replica %s", sname, handle.locator[:12], name)
        return handle

    async def stop(self, name: str, *, force: bool = False) -> None:
        await self._calls.run(f"cannot stop replica {name!r}", self._remove, name, force)

    async def adopt(self, handle: ReplicaHandle) -> bool:
        running = await self._calls.run(f"cannot look up replica {handle.name!r}", self._running)
        return any(h.name == handle.name for h in running)

    async def list(self) -> list[ReplicaHandle]:
        return await self._calls.run("cannot list replicas", self._running)

    def describe(self, handle: ReplicaHandle) -> Description:
        return {"service": handle.locator[:12]} if handle.locator else {}

    async def release(self) -> None:
        """Nothing to hand over: the swarm's managers, not this process, keep the services."""

    async def close(self) -> None:
        for handle in await self.list():
            await self.stop(handle.name)

    # -- blocking helpers (run in a thread) -----------------------------------------------

    def _create(self, sname: str, name: str, server_id: str) -> ReplicaHandle:
        from docker.types import EndpointSpec, RestartPolicy, ServiceMode

        for old in self._ours():
            if old.attrs["Spec"]["Labels"].get(LABEL_NAME) == name and self._task_of(old):
                raise RuntimeFailure(f"replica {name!r} is already running")
            if old.name == sname and not self._task_of(old):
                _remove_service(old)  # a replica of ours that ended and nobody cleaned: the name
        labels = {
            LABEL_DEPLOYMENT: self._deployment,
            LABEL_NAME: name,
            LABEL_SERVER_ID: server_id,
        }
        services: Any = self._client.services  # (the stubs leave create untyped)
        service: Service = services.create(
            self._image,
            name=sname,
            env=[f"SERVER_ID={server_id}"],
            labels=labels,
            container_labels=labels,
            networks=[{"Target": self._network, "Aliases": [sname]}],
            restart_policy=RestartPolicy(condition="none"),  # the leader replaces, not Swarm
            mode=ServiceMode("replicated", replicas=1),
            constraints=self._constraints,
            stop_grace_period=int(self._stop_grace_s * 1e9),
            endpoint_spec=EndpointSpec(mode="dnsrr"),  # no virtual IP: the task's own address
        )
        try:
            return self._await_running(service, name)
        except BaseException:
            with contextlib.suppress(Exception):  # the error that matters is the one above
                _remove_service(service)
            raise

    def _await_running(self, service: Service, name: str) -> ReplicaHandle:
        """The handle of ``service`` once its task runs with an address.

        Raises:
            RuntimeFailure: the task ended, or did not run within ``start_timeout_s``.
        """
        deadline = time.monotonic() + self._start_timeout_s
        polls = 0
        while True:
            tasks = _tasks(service)
            for task in tasks:
                self._check_starting(task, name, node=polls % _NODE_EVERY == 0)
            polls += 1
            handle = self._handle(service, tasks)
            if handle is not None and not handle.address.startswith(service.name):
                return handle
            if time.monotonic() >= deadline:
                raise RuntimeFailure(
                    f"the task of replica {name!r} did not run within {self._start_timeout_s}s"
                )
            time.sleep(_POLL_S)

    def _check_starting(self, task: Task, name: str, *, node: bool) -> None:
        """Raises RuntimeFailure when ``task`` ended, or (``node``: asked now and then) sits on
        a node that is down. A node that failed a moment ago still looks ready to the scheduler
        and can be given the replacement of its own replica; waiting out ``start_timeout_s``
        for that task would delay the replacement, so the spawn fails as soon as the managers
        mark the node down, and the leader's next round places it elsewhere."""
        status = task.get("Status", {})
        if status.get("State") in _ENDED:
            why = status.get("Err") or status.get("Message") or status.get("State")
            raise RuntimeFailure(f"the task of replica {name!r} ended: {why}")
        if not node or not task.get("NodeID") or status.get("State") == "running":
            return
        state = self._client.nodes.get(task["NodeID"]).attrs.get("Status", {}).get("State")
        if state not in ("ready", "unknown"):
            raise RuntimeFailure(f"the task of replica {name!r} is on a node that is {state}")

    def _remove(self, name: str, force: bool) -> None:
        for service in self._ours():
            if service.attrs["Spec"]["Labels"].get(LABEL_NAME) != name:
                continue
            try:
                containers = [_container_id(t) for t in _tasks(service)]
                if not force:  # the task gets SIGTERM, then SIGKILL after the grace period
                    service.scale(0)
                    self._await_stopped(service.id, containers, self._stop_grace_s + 10.0)
                _remove_service(service)  # (force: removal kills the task's container at once)
                self._await_stopped(None, containers, 10.0)
            except _errors().NotFound:
                return  # gone meanwhile
            log.info("removed service %s of replica %s", service.name, name)

    def _await_stopped(
        self, service_id: str | None, containers: Sequence[str], wait_s: float
    ) -> None:
        """Until no task of service ``service_id`` still runs and none of ``containers`` runs
        on this node (a task marked shut down can still be stopping), or ``wait_s`` passed. A
        container on another node is that node's agent's: its task's state says it stopped."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            tasks = [] if service_id is None else self._api.tasks({"service": service_id})
            ended = all(t.get("Status", {}).get("State") in _ENDED for t in tasks)
            if ended and not any(self._runs_here(c) for c in containers if c):
                return
            time.sleep(_POLL_S)
        log.warning("a task of replica service %s still runs after %.0fs", service_id, wait_s)

    def _runs_here(self, container_id: str) -> bool:
        try:
            return bool(self._client.containers.get(container_id).status == "running")
        except _errors().NotFound:
            return False  # gone, or on another node

    def _running(self) -> Handles:
        services = self._ours()
        if not services:
            return []
        tasks = self._api.tasks(filters={"service": [s.id for s in services]})
        by_service: dict[str, Tasks] = {}
        for task in tasks:
            by_service.setdefault(task["ServiceID"], []).append(task)
        found = (self._handle(s, by_service.get(str(s.id), [])) for s in services)
        return [h for h in found if h is not None]

    def _ours(self) -> Services:
        found: Services = self._client.services.list(
            filters={"label": f"{LABEL_DEPLOYMENT}={self._deployment}"}
        )
        return found

    def _task_of(self, service: Service) -> Task | None:
        """The running task of ``service``, if it has one."""
        return _running_task(_tasks(service))

    def _handle(self, service: Service, tasks: Tasks) -> ReplicaHandle | None:
        """The replica of ``service``, None unless its task runs."""
        task = _running_task(tasks)
        if task is None:
            return None
        labels: dict[str, Any] = service.attrs["Spec"].get("Labels") or {}
        host = self._address(task) or str(service.name)
        if ":" in host:  # an IPv6 overlay address
            host = f"[{host}]"
        return ReplicaHandle(
            str(labels.get(LABEL_NAME, service.name)),
            str(labels.get(LABEL_SERVER_ID, "")),
            f"{host}:{self._port}",
            str(service.id),
        )

    def _address(self, task: Task) -> str | None:
        """The task's IP on the replicas' network: its attachment's address (overlay), else
        (a swarm-scoped bridge network) its container's, when the container runs here."""
        for attachment in task.get("NetworksAttachments") or []:
            spec = attachment.get("Network", {}).get("Spec", {})
            if spec.get("Name") == self._network and attachment.get("Addresses"):
                return str(attachment["Addresses"][0]).partition("/")[0]
        container_id = _container_id(task)
        if not container_id:
            return None
        try:
            container = self._client.containers.get(container_id)
        except _errors().NotFound:
            return None
        networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
        return (networks.get(self._network) or {}).get("IPAddress") or None


def _remove_service(service: Service) -> None:
    cast(Any, service).remove()  # (the stubs leave remove untyped)


def _tasks(service: Service) -> Tasks:
    found: Tasks = cast(Any, service).tasks()  # (the stubs leave tasks untyped)
    return found


def _container_id(task: Task) -> str:
    return str(task.get("Status", {}).get("ContainerStatus", {}).get("ContainerID") or "")


def _running_task(tasks: Tasks) -> Task | None:
    for task in tasks:
        if task.get("Status", {}).get("State") == "running" and task.get("DesiredState") == (
            "running"
        ):
            return task
    return None


# -- configuration: the section and factory balancer.runtimes.registry names ------------------


@dataclass(frozen=True)
class SwarmSettings:
    """Replicas as Docker Swarm services on an attachable network, through a manager's socket."""

    image: str = setting(
        "chlb-server:latest",
        "swarm_image",
        "image of the replica services (runtime=swarm); every node must have it",
    )
    network: str = setting(
        "chlb-replicas",
        "swarm_network",
        "attachable (overlay) network the replica services join; the balancer must be on it",
    )
    deployment: str = setting(
        "chlb",
        "swarm_deployment",
        "label value and name prefix that mark this deployment's services",
    )
    timeout_s: float = setting(
        30.0,
        "swarm_timeout_s",
        "seconds any single Swarm API call may take, and a new task may take to run",
    )
    constraints: str = setting(
        "",
        "swarm_constraints",
        "comma-separated placement constraints of the replica services (node.role==worker)",
    )

    def __post_init__(self) -> None:
        check(positive(self, "timeout_s"))


def swarm_runtime(settings: SwarmSettings) -> SwarmRuntime:
    """The registry's factory: a client of the manager the environment names (``DOCKER_HOST``,
    else the local socket), each call bounded by ``settings.timeout_s``."""
    import docker  # the SDK, in the Swarm deployment only

    return SwarmRuntime(
        docker.from_env(timeout=int(settings.timeout_s)),
        image=settings.image,
        network=settings.network,
        deployment=settings.deployment,
        constraints=comma_list(settings.constraints),
        start_timeout_s=settings.timeout_s,
    )

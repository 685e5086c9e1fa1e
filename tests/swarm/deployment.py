"""A chlb deployment on Docker Swarm, made of services the test creates (no stack file).

``SwarmDeployment`` runs, on an attachable overlay network of its own: a private Redis service,
and balancer services (one task each, ``LB_RUNTIME=swarm``, the Docker socket mounted, the port
published in host mode on 127.0.0.1-reachable host ports) that start the replicas as services
of ``chlb-server:latest`` labelled with the deployment. The host cannot reach the overlay's
addresses, so the test talks to the balancers only, through their published ports; the
balancers reach Redis and the replicas inside the overlay, as in production. Every service and
the network carry names derived from ``prefix``, and teardown removes them by label and name.
Every service resolves by DNS round robin (``endpoint_mode: dnsrr``) to its tasks' addresses:
a virtual IP needs the kernel's IPVS, which some hosts (this sandbox) lack; the balancer does
not need one (it reaches each replica's task address, and Redis has one task).
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balancer.runtimes.docker import LABEL_DEPLOYMENT, LABEL_NAME

REPO = Path(__file__).resolve().parents[2]
SERVER_IMAGE = "chlb-server:latest"
BALANCER_BASE = "chlb-balancer:latest"
BALANCER_IMAGE = "chlb-balancer:swarm-test"
REDIS_IMAGES = ("redis:7", "chlb-base:offline")  # any image with redis-server on PATH
ADMIN_TOKEN = "swarm-test-token"
LABEL_TEST = "chlb.swarm-test"

Json = dict[str, Any]

# The balancer image with this working tree's balancer package in place of the one it was
# built with: the test runs the code under test, and the build needs no registry or index.
_DOCKERFILE = f"""FROM {BALANCER_BASE}
COPY balancer /tmp/balancer-src
RUN site=$(python3 -c 'import balancer, os; print(os.path.dirname(balancer.__file__))') \\
 && rm -rf "$site" && cp -r /tmp/balancer-src "$site" && rm -rf /tmp/balancer-src
"""


def build_balancer_image(client: Any) -> str:
    """``chlb-balancer:swarm-test``: ``chlb-balancer:latest`` with ``balancer/`` from here."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = _DOCKERFILE.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        tar.add(
            REPO / "balancer",
            arcname="balancer",
            filter=lambda t: None if "__pycache__" in t.name else t,
        )
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=BALANCER_IMAGE, rm=True, pull=False)
    return BALANCER_IMAGE


def redis_image(client: Any) -> str | None:
    for image in REDIS_IMAGES:
        with contextlib.suppress(Exception):
            client.images.get(image)
            return image
    return None


@dataclass
class SwarmDeployment:
    client: Any
    ports: dict[str, int]  # balancer instance id → published host port
    redis_image: str
    prefix: str = field(default_factory=lambda: f"chlbsw{uuid.uuid4().hex[:6]}")
    env: dict[str, str] = field(default_factory=dict)  # extra balancer settings
    ready_s: float = 0.0  # from up until N=3 on every balancer
    host: str = "127.0.0.1"  # where the published ports answer (a node's address)
    socket: str = "/var/run/docker.sock"  # the manager's socket, as its daemon's host sees it

    @property
    def network(self) -> str:
        return f"{self.prefix}-net"

    @property
    def deployment(self) -> str:  # the replicas' chlb.deployment label and name prefix
        return self.prefix

    def up(self) -> None:
        self.client.networks.create(
            self.network, driver="overlay", attachable=True, labels={LABEL_TEST: self.prefix}
        )
        self._service(
            self.redis_image,
            f"{self.prefix}-redis",
            command=["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"],
            constraints=["node.role==manager"],
        )
        for instance, port in self.ports.items():
            self.start_balancer(instance, port)

    def start_balancer(self, instance: str, port: int) -> None:
        from docker.types import EndpointSpec, Mount

        env = {
            "LB_REDIS_URL": f"redis://{self.prefix}-redis:6379/0",
            "LB_INSTANCE_ID": instance,
            "LB_RUNTIME": "swarm",
            "LB_SWARM_NETWORK": self.network,
            "LB_SWARM_DEPLOYMENT": self.deployment,
            "LB_SWARM_IMAGE": SERVER_IMAGE,
            "LB_ADMIN_TOKEN": ADMIN_TOKEN,
            **self.env,
        }
        self._service(
            BALANCER_IMAGE,
            f"{self.prefix}-{instance}",
            env=[f"{k}={v}" for k, v in env.items()],
            mounts=[Mount("/var/run/docker.sock", self.socket, type="bind")],
            endpoint_spec=EndpointSpec(mode="dnsrr", ports=_host_port(port, 5555)),
            constraints=["node.role==manager"],
            stop_grace_period=int(20e9),
        )

    def _service(self, image: str, name: str, **kwargs: Any) -> Any:
        from docker.types import EndpointSpec, RestartPolicy

        kwargs.setdefault("endpoint_spec", EndpointSpec(mode="dnsrr"))  # see the docstring
        return self.client.services.create(
            image,
            name=name,
            networks=[self.network],
            labels={LABEL_TEST: self.prefix},
            restart_policy=RestartPolicy(condition="any", delay=int(1e9)),
            **kwargs,
        )

    # -- what runs ---------------------------------------------------------------------------

    def replica_services(self) -> list[Any]:
        found: list[Any] = self.client.services.list(
            filters={"label": f"{LABEL_DEPLOYMENT}={self.deployment}"}
        )
        return found

    def running_replicas(self) -> dict[str, str]:
        """Replica services whose task runs: service id → replica name."""
        running = {}
        for service in self.replica_services():
            with contextlib.suppress(Exception):
                if any(t["Status"]["State"] == "running" for t in service.tasks()):
                    running[service.id] = service.attrs["Spec"]["Labels"].get(LABEL_NAME, "")
        return running

    def balancer_container(self, instance: str) -> Any:
        """The running container of a balancer service's task (on this node)."""
        service = self.client.services.get(f"{self.prefix}-{instance}")
        for task in service.tasks(filters={"desired-state": "running"}):
            cid = task["Status"].get("ContainerStatus", {}).get("ContainerID")
            if task["Status"]["State"] == "running" and cid:
                return self.client.containers.get(cid)
        raise LookupError(f"no running task of {instance}")

    def logs(self, tail: int = 25) -> str:
        parts = []
        for instance in self.ports:
            try:
                service = self.client.services.get(f"{self.prefix}-{instance}")
                text = b"".join(service.logs(stdout=True, stderr=True, tail=tail)).decode(
                    errors="replace"
                )
            except Exception as exc:
                text = f"(no log: {exc})\n"
            parts.append(f"--- {self.prefix}-{instance} ---\n{text}")
        return "".join(parts)

    # -- teardown ----------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove the balancers (their last one stops the replicas), then whatever of this
        deployment is left, and the network; returns what had to be removed by force."""
        for instance in self.ports:
            with contextlib.suppress(Exception):
                self.client.services.get(f"{self.prefix}-{instance}").remove()
        deadline = time.monotonic() + 30.0
        while self.replica_services() and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [s.name for s in self.replica_services()]
        for service in [
            *self.replica_services(),
            *self.client.services.list(filters={"label": f"{LABEL_TEST}={self.prefix}"}),
        ]:
            with contextlib.suppress(Exception):
                service.remove()
        for _ in range(60):  # the tasks' containers leave the network a moment later
            try:
                self.client.networks.get(self.network).remove()
                break
            except Exception:
                time.sleep(0.5)
        return left


def _host_port(published: int, target: int) -> Any:
    """``EndpointSpec`` ports: published → (target, protocol, host mode: this node's port,
    without the routing mesh, which also needs IPVS)."""
    return {published: (target, "tcp", "host")}


def get_json(port: int, path: str, timeout_s: float = 2.0, host: str = "127.0.0.1") -> Json | None:
    """``GET`` a balancer's JSON without an event loop (fixtures are synchronous)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{host}:{port}{path}", timeout=timeout_s) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return doc if isinstance(doc, dict) else None


def wait_ready(dep: SwarmDeployment, count: int, timeout_s: float) -> float:
    """Until ``/rep`` shows N=``count`` on every balancer; the seconds it took."""
    started = time.monotonic()
    seen: dict[str, Any] = {}
    while time.monotonic() - started < timeout_s:
        seen = {i: get_json(p, "/rep", host=dep.host) for i, p in dep.ports.items()}
        if all(doc and doc.get("message", {}).get("N") == count for doc in seen.values()):
            return time.monotonic() - started
        time.sleep(0.3)
    raise AssertionError(f"/rep not N={count} everywhere within {timeout_s}s: {seen}\n{dep.logs()}")

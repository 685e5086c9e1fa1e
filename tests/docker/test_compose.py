"""The docker-compose deployment end to end: Redis, lb1 (127.0.0.1:5555) and lb2 (:5556), and the
replica containers the leader starts, on a real Docker daemon with the offline images.

  1. ``up``: ``/rep`` shows N=3 on both instances; 10,000 ``GET /home`` spread over 3 servers
     with no failure; ``/add`` and ``/rm`` start and remove containers, on the leader and on the
     follower (its change is relayed to the leader);
  2. ``docker rm -f`` of a replica under steady load: a replacement container with a new random
     name within 10 s, N restored, (almost) no failed request, the other replicas untouched;
  3. ``docker stop`` of the leader's balancer container: the other instance leads, and replaces
     a replica container killed afterwards;
  4. ``docker-compose down`` leaves no replica container and removes the network;
  5. a removed replica on a deployment whose balancers have an unreachable upstream DNS server,
     as on an offline host, with many requests for its keys: the other replicas stay (a
     regression test: while replicas were reached by container name, the lookups of the
     removed name hung and stalled every connection, heartbeats included, so the leader
     evicted every replica and kept failing to start new ones; fixed in 73a8b7c).

Isolation: each deployment runs as its own compose project (``-p chlbtest<hex>``) on its own
network (``LB_DOCKER_NETWORK=chlbtest<hex>-net``), and a temporary override file (outside the
repository) gives both balancers their own deployment label (``LB_DOCKER_DEPLOYMENT``), so the
tests see, kill and clean up only their own containers, never a user's ``chlb`` deployment. The
compose file publishes fixed host ports, so the tests skip when 127.0.0.1:5555 or :5556 is
taken. Traffic goes only to those published ports. Teardown runs ``docker-compose stop`` (so
the balancers' shutdown logs can be shown) and ``down --remove-orphans``, then fails if any
container of the deployment or the project is left (removing it, by id), or the network.

Needs a running dockerd, docker-compose and the images (``OFFLINE=1
infra/docker/build-images.sh``); skips with the reason otherwise. Each test prints what it
measured (visible with ``pytest -s``). The balancer image holds the balancer code of the time it
was built: rebuild it after changing ``balancer/``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

docker = pytest.importorskip("docker")

from balancer.runtimes.docker import LABEL_DEPLOYMENT, LABEL_NAME  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
OFFLINE_ENV = REPO / "infra" / "docker" / "offline.env"
ADMIN_TOKEN = "compose-test-token"
PORTS = {"lb1": 5555, "lb2": 5556}  # fixed in docker-compose.yml
IMAGES = ("chlb-server:latest", "chlb-balancer:latest")
LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
SERVER_PREFIX = "Hello from Server: "
READY_TIMEOUT_S = 60.0
RESPAWN_LIMIT_S = 10.0
SETTLE_TIMEOUT_S = 45.0
MAX_FAILED_UNDER_KILL = 10  # target 0: refused connections are retried on the next replica
UNREACHABLE_DNS = "192.0.2.1"  # TEST-NET-1 (RFC 5737): nothing ever answers there

Json = dict[str, Any]

# -- the deployment ----------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (as ``set -a; . file`` reads this one), comments skipped."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def published_by_containers(client: Any, ports: set[int]) -> list[str]:
    """Containers that publish one of ``ports`` on the host (with or without docker-proxy)."""
    taken = []
    for container in client.containers.list():
        for bindings in (container.attrs["NetworkSettings"].get("Ports") or {}).values():
            for binding in bindings or []:
                if binding.get("HostPort", "").isdigit() and int(binding["HostPort"]) in ports:
                    taken.append(f"{container.name} ({binding['HostPort']})")
    return taken


@dataclass
class Deployment:
    """One compose project of the repository's docker-compose.yml, with names of its own."""

    client: Any
    workdir: Path
    dns: str | None = None  # the balancers' upstream DNS server (compose `dns:`), if set
    project: str = field(default_factory=lambda: f"chlbtest{uuid.uuid4().hex[:8]}")
    is_down: bool = False
    up_s: float = 0.0  # `docker-compose up -d` alone
    ready_s: float = 0.0  # from `up` until /rep shows N=3 on both instances

    @property
    def deployment(self) -> str:  # the chlb.deployment label and replica container name prefix
        return self.project

    @property
    def network(self) -> str:
        return f"{self.project}-net"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("DOCKER_HOST", "unix:///var/run/docker.sock")
        env.update(read_env_file(OFFLINE_ENV))
        env["LB_DOCKER_NETWORK"] = self.network
        env["LB_ADMIN_TOKEN"] = ADMIN_TOKEN  # the compose file turns the token on
        return env

    def override_file(self) -> Path:
        """Both balancers get this deployment's label (compose merges environment per key)."""
        path = self.workdir / f"{self.project}.override.yml"
        lines = ['version: "3.9"', "services:"]
        for service in PORTS:
            lines += [f"  {service}:"]
            if self.dns:
                lines += [f'    dns: ["{self.dns}"]']
            lines += ["    environment:", f"      LB_DOCKER_DEPLOYMENT: {self.deployment}"]
        path.write_text("\n".join(lines) + "\n")
        return path

    def compose(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        argv = [
            "docker-compose",
            *("-p", self.project),
            *("-f", str(COMPOSE_FILE), "-f", str(self.override_file())),
            *args,
        ]
        return subprocess.run(
            argv,
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def replicas(self, *, include_stopped: bool = False) -> list[Any]:
        """Replica containers of this deployment (label ``chlb.deployment``)."""
        found: list[Any] = self.client.containers.list(
            all=include_stopped,
            filters={"label": f"{LABEL_DEPLOYMENT}={self.deployment}"},
            ignore_removed=True,  # one removed between the listing and its inspection
        )
        return found

    def project_containers(self) -> list[Any]:
        found: list[Any] = self.client.containers.list(
            all=True, filters={"label": f"{LABEL_PROJECT}={self.project}"}, ignore_removed=True
        )
        return found

    def service(self, name: str) -> Any:
        (container,) = self.client.containers.list(
            all=True,
            filters={"label": [f"{LABEL_PROJECT}={self.project}", f"{LABEL_SERVICE}={name}"]},
            ignore_removed=True,
        )
        return container

    def network_exists(self) -> bool:
        return any(n.name == self.network for n in self.client.networks.list())

    def logs(self, tail: int = 30, since: float | None = None) -> str:
        """The last lines of every balancer container's log (for failure messages)."""
        parts = []
        for service in PORTS:
            try:
                kwargs: dict[str, Any] = {"tail": tail}
                if since is not None:
                    kwargs["since"] = datetime.datetime.fromtimestamp(since)
                text = self.service(service).logs(**kwargs).decode(errors="replace")
            except Exception as exc:  # gone, or never created
                text = f"(no log: {exc})\n"
            parts.append(f"--- docker logs {self.project}_{service}_1 ---\n{text}")
        return "".join(parts)

    def up(self) -> None:
        """``docker-compose up -d`` and wait until /rep shows N=3 on both instances."""
        started = time.monotonic()
        result = self.compose("up", "-d", "--no-build", timeout_s=120.0)
        self.up_s = time.monotonic() - started
        if result.returncode != 0:
            if re.search(r"port is already allocated|address already in use", result.stderr):
                pytest.skip(f"host port taken meanwhile: {result.stderr.strip()[-300:]}")
            raise AssertionError(f"docker-compose up failed:\n{result.stderr}")
        self.ready_s = self.up_s + wait_ready(self, READY_TIMEOUT_S)

    def down(self) -> float:
        """``docker-compose down --remove-orphans`` (= make down); the seconds it took."""
        started = time.monotonic()
        result = self.compose("down", "--remove-orphans", timeout_s=90.0)
        took = time.monotonic() - started
        self.is_down = True
        assert result.returncode == 0, f"docker-compose down failed:\n{result.stderr}"
        return took

    def leftovers(self) -> list[Any]:
        by_id = {c.id: c for c in self.replicas(include_stopped=True)}
        by_id.update((c.id, c) for c in self.project_containers())
        return list(by_id.values())


def rep_sync(port: int) -> Json | None:
    """``GET /rep`` without an event loop (the fixtures are synchronous)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/rep", timeout=2.0) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return doc.get("message") if isinstance(doc, dict) else None


def wait_ready(dep: Deployment, timeout_s: float) -> float:
    """Until ``/rep`` shows N=3 on both instances; the seconds it took."""
    started = time.monotonic()
    seen: dict[int, Json | None] = {}
    while time.monotonic() - started < timeout_s:
        seen = {port: rep_sync(port) for port in PORTS.values()}
        if all(rep and rep.get("N") == 3 for rep in seen.values()):
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(
        f"/rep did not show N=3 on both instances within {timeout_s}s: {seen}\n{dep.logs()}"
    )


def check_preconditions(client: Any) -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (infra/docker/ensure-docker.sh installs it)")
    for image in (*IMAGES, read_env_file(OFFLINE_ENV)["REDIS_IMAGE"]):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.skip(f"image {image} not built (OFFLINE=1 infra/docker/build-images.sh)")
    busy = [p for p in PORTS.values() if port_in_use(p)]
    publishers = published_by_containers(client, set(PORTS.values()))
    if busy or publishers:
        pytest.skip(
            f"127.0.0.1 ports {sorted(PORTS.values())} are taken ({busy}; containers: "
            f"{publishers}): docker-compose.yml publishes fixed ports, so the test cannot run "
            "next to another deployment"
        )


def clean_up(dep: Deployment) -> None:
    """Stop (keeping the balancers' shutdown logs), ``down --remove-orphans``, then remove (by
    id) whatever of this deployment is left, and fail if anything was."""
    problems = []
    shutdown_logs = ""
    if not dep.is_down:
        stopped = time.monotonic()
        result = dep.compose("stop", timeout_s=90.0)
        shutdown_logs = dep.logs(tail=25)
        print(f"[teardown] docker-compose stop {time.monotonic() - stopped:.1f} s")
        if result.returncode != 0:
            problems.append(f"docker-compose stop: {result.stderr.strip()[-500:]}")
    result = dep.compose("down", "--remove-orphans", timeout_s=90.0)
    if result.returncode != 0:
        problems.append(f"docker-compose down: {result.stderr.strip()[-500:]}")
    left = dep.leftovers()
    for container in left:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    if left:
        problems.append(
            "containers left after down (removed now): "
            + ", ".join(f"{c.name} ({c.status}, {c.labels.get(LABEL_NAME, '-')})" for c in left)
        )
    if dep.network_exists():
        problems.append(f"network {dep.network} left after down (removed now)")
        with contextlib.suppress(docker.errors.APIError):
            dep.client.networks.get(dep.network).remove()
    if problems:
        pytest.fail("; ".join(problems) + f"\nbalancer logs at shutdown:\n{shutdown_logs}")


@contextlib.contextmanager
def deployment_up(client: Any, workdir: Path, dns: str | None = None) -> Iterator[Deployment]:
    check_preconditions(client)
    dep = Deployment(client, workdir, dns=dns)
    try:
        dep.up()
        yield dep
    finally:
        clean_up(dep)


@pytest.fixture(scope="module")
def dep(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The deployment up (offline env), N=3 on both instances; torn down after the module."""
    with deployment_up(docker_client, tmp_path_factory.mktemp("compose")) as deployment:
        yield deployment


# -- HTTP helpers ------------------------------------------------------------------------------


def url(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100),
        timeout=aiohttp.ClientTimeout(total=10),
    ) as session:
        yield session


async def call(
    s: aiohttp.ClientSession, method: str, port: int, path: str, body: Json | None = None
) -> tuple[int, Json]:
    """One request; changes carry the deployment's admin token, as an operator's would."""
    headers = {} if method == "GET" else {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with s.request(method, url(port, path), json=body, headers=headers) as resp:
        return resp.status, json.loads(await resp.read())


async def rep(s: aiohttp.ClientSession, port: int) -> Json:
    code, doc = await call(s, "GET", port, "/rep")
    assert code == 200, doc
    return doc["message"]  # type: ignore[no-any-return]


async def leader_of(s: aiohttp.ClientSession, timeout_s: float = 10.0) -> str:
    """The instance id (lb1 or lb2, the compose service) that /lb/status names as the leader
    (polled: right after startup the announcements may not show one yet)."""
    started = time.monotonic()
    seen: list[Any] = []
    while time.monotonic() - started < timeout_s:
        for port in PORTS.values():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                code, doc = await call(s, "GET", port, "/lb/status")
                leaders = [i["id"] for i in doc["instances"] if i["leader"]]
                seen.append(leaders)
                if code == 200 and len(leaders) == 1:
                    return str(leaders[0])
        await asyncio.sleep(0.1)
    pytest.fail(f"no single leader in /lb/status within {timeout_s}s: {seen[-4:]}")


async def poll(
    check: Callable[[], Awaitable[bool]], timeout_s: float, every_s: float = 0.05
) -> float | None:
    """Poll ``check`` until true: the seconds it took, or None after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, AssertionError):
            if await check():
                return time.monotonic() - started
        await asyncio.sleep(every_s)
    return None


async def running_names(dep: Deployment) -> dict[str, str]:
    """Running replica containers of the deployment: container name → replica name."""
    containers = await asyncio.to_thread(dep.replicas)
    return {c.name: c.labels.get(LABEL_NAME, "") for c in containers}


async def wait_count(dep: Deployment, count: int, timeout_s: float = 10.0) -> float:
    took = await poll(lambda: _has_count(dep, count), timeout_s, every_s=0.1)
    names = sorted(await running_names(dep))
    assert took is not None, f"{len(names)} running replica containers, not {count}: {names}"
    return took


async def _has_count(dep: Deployment, count: int) -> bool:
    return len(await running_names(dep)) == count


def served_by(body: Json) -> str | None:
    message = body.get("message")
    if isinstance(message, str) and message.startswith(SERVER_PREFIX):
        return message[len(SERVER_PREFIX) :]
    return None


async def settled(s: aiohttp.ClientSession, dep: Deployment, ports: list[int]) -> bool:
    """N=3 on every port, the same replicas, each one a running container."""
    reps = [await rep(s, port) for port in ports]
    names = set(reps[0]["replicas"])
    running = set((await running_names(dep)).values())
    return all(r["N"] == 3 and set(r["replicas"]) == names for r in reps) and names == running


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f}"


# -- 1. up, spread, add and remove -------------------------------------------------------------


async def spread(s: aiohttp.ClientSession, total: int, concurrency: int) -> tuple[Json, list[str]]:
    """``total`` GET /home (no key: a random id each), alternating the two ports, ``concurrency``
    at a time: (requests per server, failures)."""
    counts: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    ports = list(PORTS.values())
    per_worker = total // concurrency

    async def worker(w: int) -> None:
        for i in range(per_worker):
            port = ports[(w + i) % 2]
            try:
                async with s.get(url(port, "/home")) as resp:
                    body = json.loads(await resp.read())
                server = served_by(body)
                if resp.status == 200 and server is not None:
                    counts[server] += 1
                else:
                    failures.append(f"{port}: {resp.status} {body}")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                failures.append(f"{port}: {exc!r}")

    async with asyncio.timeout(90):
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return dict(counts), failures


async def change(
    s: aiohttp.ClientSession, dep: Deployment, method: str, port: int, path: str, body: Json
) -> Json:
    code, doc = await call(s, method, port, path, body)
    assert code == 200, f"{method} {path} {body} on :{port}: {code} {doc}\n{dep.logs()}"
    return doc["message"]  # type: ignore[no-any-return]


async def add_then_remove(
    s: aiohttp.ClientSession, dep: Deployment, port: int, role: str, names: list[str]
) -> None:
    """On one instance: /add 2 named replicas (2 more containers), /rm the first (1 fewer);
    prints the counts and timings."""
    before = len(await running_names(dep))
    started = time.monotonic()
    added = await change(s, dep, "POST", port, "/add", {"n": 2, "hostnames": names})
    add_s = time.monotonic() - started
    assert set(names) <= set(added["replicas"]), added
    await wait_count(dep, before + 2)
    by_replica = {r: c for c, r in (await running_names(dep)).items()}
    assert {by_replica[n] for n in names} == {f"{dep.deployment}-{n}" for n in names}
    started = time.monotonic()
    removed = await change(s, dep, "DELETE", port, "/rm", {"n": 1, "hostnames": names[:1]})
    rm_s = time.monotonic() - started
    assert names[0] not in removed["replicas"] and names[1] in removed["replicas"], removed
    gone_s = await wait_count(dep, before + 1)
    assert names[0] not in (await running_names(dep)).values()
    for p in PORTS.values():  # both instances route on the new ring
        await poll(partial(_rep_n, s, p, removed["N"]), 5.0)
        assert (await rep(s, p))["N"] == removed["N"] == before + 1
    print(
        f"[add/rm on the {role} :{port}] /add {names} → {before + 2} containers "
        f"({add_s:.2f} s), /rm {names[:1]} → {before + 1} containers ({rm_s:.2f} s, container "
        f"gone {gone_s:.2f} s after the answer)"
    )


async def _rep_n(s: aiohttp.ClientSession, port: int, n: int) -> bool:
    return bool((await rep(s, port))["N"] == n)


@pytest.mark.timeout(240)
async def test_up_spread_add_and_remove(dep: Deployment, http: aiohttp.ClientSession) -> None:
    print(
        f"\n[up] project {dep.project}: `docker-compose up -d` {dep.up_s:.1f} s, /rep N=3 on "
        f"both instances {dep.ready_s:.1f} s after up"
    )
    reps = [await rep(http, port) for port in PORTS.values()]
    assert reps[0] == reps[1] and reps[0]["N"] == 3, reps
    assert len(await running_names(dep)) == 3

    started = time.monotonic()
    counts, failures = await spread(http, 10_000, 100)
    took = time.monotonic() - started
    total = sum(counts.values())
    shares = ", ".join(f"{k}: {v} ({v / max(total, 1):.1%})" for k, v in sorted(counts.items()))
    print(
        f"[spread] 10,000 GET /home over :5555/:5556 (100 at a time) in {took:.1f} s "
        f"({total / took:.0f} req/s): {shares}; failures {len(failures)}"
    )
    assert not failures, failures[:10]
    assert total == 10_000 and len(counts) == 3, counts
    assert min(counts.values()) >= 1500, counts  # the ring gives each of 3 ~31-37%

    leader = await leader_of(http)
    follower = next(i for i in PORTS if i != leader)
    await add_then_remove(http, dep, PORTS[leader], f"leader {leader}", ["S5", "S6"])
    await add_then_remove(http, dep, PORTS[follower], f"follower {follower}", ["S7", "S8"])
    # Back to the initial 3 for the next tests.
    back = await change(
        http, dep, "DELETE", PORTS[follower], "/rm", {"n": 2, "hostnames": ["S6", "S8"]}
    )
    assert back["N"] == 3, back
    await wait_count(dep, 3)


# -- 2. a replica container removed under load -------------------------------------------------


@dataclass
class Load:
    """Client loops of GET /home?id=<i> alternating both ports, bounded in count and time."""

    ports: list[int]
    loops: int = 4
    max_per_loop: int = 50_000
    max_s: float = 20.0
    ok: int = 0
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[tuple[float, str]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)

    async def run(self, s: aiohttp.ClientSession) -> None:
        self.started = time.monotonic()
        await asyncio.gather(*(self._loop(s, n) for n in range(self.loops)))

    async def _loop(self, s: aiohttp.ClientSession, n: int) -> None:
        for i in range(self.max_per_loop):
            if self.stop.is_set() or time.monotonic() - self.started > self.max_s:
                return
            port = self.ports[i % len(self.ports)]
            at = time.monotonic()
            try:
                async with s.get(url(port, f"/home?id={n * 1_000_000 + i}")) as resp:
                    body = json.loads(await resp.read())
                server = served_by(body)
                if resp.status == 200 and server is not None:
                    self.ok += 1
                    self.counts[server] += 1
                else:
                    self.failures.append((at, f":{port} {resp.status} {body.get('message')}"))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.failures.append((at, f":{port} {exc!r}"))

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)


@dataclass
class KillResult:
    """What ``kill_under_load`` measured (times in seconds after the ``docker rm -f``)."""

    victim_container: str = ""
    victim: str = ""
    before: set[str] = field(default_factory=set)  # the ring before the kill
    rm_s: float = 0.0  # how long `docker rm -f` took
    container_s: float | None = None  # a new container with a new random name runs
    restored_s: float | None = None  # N=3 on both instances, victim out, a new replica in
    settled_s: float | None = None  # N=3, same ring everywhere, each member a running container
    ring_seen: set[str] = field(default_factory=set)  # every replica name /rep showed
    empty_s: float = 0.0  # how long /rep showed an empty ring (sampled)
    final: set[str] = field(default_factory=set)
    load: Load | None = None
    log_lines: list[str] = field(default_factory=list)

    @property
    def healthy_evicted(self) -> set[str]:
        """Replicas other than the victim that left the ring."""
        return self.before - {self.victim} - self.final

    @property
    def replacements(self) -> set[str]:
        return self.ring_seen - self.before

    @property
    def failures_after_kill(self) -> int:
        return len(self.load.failures) if self.load else 0

    def report(self, title: str) -> str:
        load = self.load or Load([])
        lines = [
            f"\n[{title}] victim {self.victim_container} ({self.victim}) removed "
            f"(docker rm -f took {self.rm_s:.2f} s); a new container with a new random name "
            f"running {_s(self.container_s)} s after, N=3 on both instances without the victim "
            f"{_s(self.restored_s)} s after (settled, checked once the load ended: "
            f"{_s(self.settled_s)} s after)",
            f"[{title}] ring before {sorted(self.before)}, after {sorted(self.final)}; "
            f"replacements started {sorted(self.replacements)}; healthy replicas evicted "
            f"{sorted(self.healthy_evicted) or 'none'}; empty ring seen for {self.empty_s:.1f} s",
            f"[{title}] load: {load.loops} loops, {load.total} requests, "
            f"{len(load.failures)} failed; per server {dict(sorted(load.counts.items()))}",
        ]
        kinds = collections.Counter(
            re.sub(r"Server \w+", "Server <x>", f) for _, f in load.failures
        )
        lines += [f"  failed {n}×: {kind}" for kind, n in kinds.most_common(5)]
        lines += [f"  log: {line}" for line in self.log_lines[:25]]
        return "\n".join(lines)


async def watch_ring(
    s: aiohttp.ClientSession, ports: list[int], result: KillResult, stop: asyncio.Event
) -> None:
    """Sample /rep on every port every 0.1 s: every name seen, and time with an empty ring."""
    while not stop.is_set():
        started = time.monotonic()
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, AssertionError):
            for port in ports:
                names = (await rep(s, port))["replicas"]
                result.ring_seen.update(names)
                if not names:
                    result.empty_s += 0.1 / len(ports)
        await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - started)))


async def kill_under_load(
    s: aiohttp.ClientSession, dep: Deployment, load_s: float = 10.0
) -> KillResult:
    """4 client loops of GET /home?id=<i> over both ports for ``load_s``; ``docker rm -f`` of a
    replica container 2 s in; measures the replacement, then waits (bounded) until the
    deployment settles (N=3 everywhere, every member a running container)."""
    ports = list(PORTS.values())
    result = KillResult(before=set((await rep(s, ports[0]))["replicas"]))
    leader = await leader_of(s)
    load = result.load = Load(ports, max_s=load_s + 10.0)
    stop_watch = asyncio.Event()
    killed_wall = time.time()
    watcher = asyncio.create_task(watch_ring(s, ports, result, stop_watch))
    runner = asyncio.create_task(load.run(s))
    try:
        await asyncio.sleep(2.0)
        assert load.ok > 0 and not load.failures, load.failures[:5]
        victim = (await asyncio.to_thread(dep.replicas))[0]
        result.victim_container, result.victim = victim.name, victim.labels[LABEL_NAME]
        fresh = re.compile(rf"^{re.escape(dep.deployment)}-[0-9a-f]{{6}}$")
        containers_before = set(await running_names(dep))
        killed_wall = time.time()
        killed = time.monotonic()
        await asyncio.to_thread(victim.remove, force=True)
        result.rm_s = time.monotonic() - killed
        while time.monotonic() - killed < RESPAWN_LIMIT_S + 5.0 and result.restored_s is None:
            names = await running_names(dep)
            if result.container_s is None and any(
                fresh.match(c) for c in set(names) - containers_before
            ):
                result.container_s = time.monotonic() - killed
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, AssertionError):
                reps = [await rep(s, port) for port in ports]
                if all(
                    r["N"] == 3
                    and result.victim not in r["replicas"]
                    and set(r["replicas"]) - result.before
                    for r in reps
                ):
                    result.restored_s = time.monotonic() - killed
            await asyncio.sleep(0.05)
        await asyncio.sleep(max(0.0, load_s - (time.monotonic() - load.started)))
        load.stop.set()
        await asyncio.wait_for(runner, 30.0)
        took = await poll(lambda: settled(s, dep, ports), SETTLE_TIMEOUT_S, every_s=0.2)
        result.settled_s = None if took is None else time.monotonic() - killed
        result.final = set((await rep(s, ports[0]))["replicas"])
    finally:
        load.stop.set()
        stop_watch.set()
        await asyncio.wait_for(asyncio.gather(runner, watcher, return_exceptions=True), 30.0)
    logs = await asyncio.to_thread(dep.service(leader).logs, since=int(killed_wall) - 1)
    result.log_lines = [
        line
        for line in logs.decode(errors="replace").splitlines()
        if re.search(r"heartbeat|evicted|replacement|supervisor|never retrieved", line)
        and "(3/" not in line
    ]
    return result


@pytest.mark.timeout(120)
async def test_removed_replica_container_is_replaced_under_load(
    dep: Deployment, http: aiohttp.ClientSession
) -> None:
    result = await kill_under_load(http, dep)
    print(result.report("rm -f under load"))
    assert result.container_s is not None and result.container_s <= RESPAWN_LIMIT_S
    assert result.settled_s is not None, dep.logs()
    assert not result.healthy_evicted, dep.logs()
    assert result.restored_s is not None and result.restored_s <= RESPAWN_LIMIT_S
    assert result.replacements == set(result.final) - result.before
    assert len(result.replacements) == 1, result.replacements
    assert result.failures_after_kill <= MAX_FAILED_UNDER_KILL


# -- 3. the leader's balancer container stopped ------------------------------------------------


async def wait_replaced(
    s: aiohttp.ClientSession, dep: Deployment, victim: Any, port: int, timeout_s: float
) -> tuple[float | None, float | None, str]:
    """After ``victim`` (a replica container) was removed: the seconds until a new running
    container with a new random name ``<deployment>-<6 hex>`` appears, the seconds until /rep
    on ``port`` shows N=3 with the new replica and without the victim, and the new name."""
    before = set(await running_names(dep))
    victim_replica = victim.labels[LABEL_NAME]
    fresh = re.compile(rf"^{re.escape(dep.deployment)}-[0-9a-f]{{6}}$")
    started = time.monotonic()
    container_s: float | None = None
    new: dict[str, str] = {}
    while time.monotonic() - started < timeout_s:
        names = await running_names(dep)
        new = {c: r for c, r in names.items() if c not in before and fresh.match(c)}
        if new and container_s is None:
            container_s = time.monotonic() - started
        if new:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, AssertionError):
                r = await rep(s, port)
                members = set(r["replicas"])
                if r["N"] == 3 and set(new.values()) <= members and victim_replica not in members:
                    return container_s, time.monotonic() - started, next(iter(new))
        await asyncio.sleep(0.05)
    return container_s, None, next(iter(new), "")


@pytest.mark.timeout(90)
async def test_other_instance_takes_over_when_the_leader_container_stops(
    dep: Deployment, http: aiohttp.ClientSession
) -> None:
    ready = await poll(lambda: settled(http, dep, list(PORTS.values())), 30.0, every_s=0.2)
    assert ready is not None, f"the deployment did not settle at N=3 first\n{dep.logs()}"
    leader = await leader_of(http)
    survivor = next(i for i in PORTS if i != leader)
    port = PORTS[survivor]
    replicas_before = set(await running_names(dep))
    assert len(replicas_before) == 3
    container = await asyncio.to_thread(dep.service, leader)
    started = time.monotonic()
    stopping = asyncio.create_task(asyncio.to_thread(container.stop, timeout=25))
    takeover_s = await poll(lambda: _leads(http, port), 20.0, every_s=0.02)
    await asyncio.wait_for(stopping, 40.0)
    stop_s = time.monotonic() - started
    await asyncio.to_thread(container.reload)
    print(
        f"\n[leader stop] {leader} stopped (docker stop took {stop_s:.2f} s, exit code "
        f"{container.attrs['State']['ExitCode']}); {survivor} leads {_s(takeover_s)} s after "
        "the stop began"
    )
    assert takeover_s is not None, dep.logs()
    # The stopped leader had a peer left: it leaves the replicas to it.
    assert set(await running_names(dep)) == replicas_before, dep.logs()
    assert (await rep(http, port))["N"] == 3

    victim = (await asyncio.to_thread(dep.replicas))[0]
    await asyncio.to_thread(victim.remove, force=True)
    container_s, restored_s, new_name = await wait_replaced(
        http, dep, victim, port, RESPAWN_LIMIT_S + 5.0
    )
    print(
        f"[leader stop] then {victim.name} removed: {new_name or '-'} running "
        f"{_s(container_s)} s after, N=3 on {survivor} {_s(restored_s)} s after"
    )
    assert restored_s is not None and restored_s <= RESPAWN_LIMIT_S, dep.logs()
    assert len(await running_names(dep)) == 3


async def _leads(s: aiohttp.ClientSession, port: int) -> bool:
    code, doc = await call(s, "GET", port, "/lb/status")
    return code == 200 and doc["leader"] is True


# -- 4. down -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_down_leaves_no_replica_containers_and_removes_the_network(dep: Deployment) -> None:
    before = len(dep.replicas())
    assert dep.network_exists()
    took = dep.down()
    left = [c.name for c in dep.replicas(include_stopped=True)]
    project_left = [c.name for c in dep.project_containers()]
    print(
        f"\n[down] `docker-compose down --remove-orphans` {took:.1f} s: replica containers "
        f"{before} → {len(left)} {left}, project containers left {project_left}, network "
        f"{dep.network} {'still there' if dep.network_exists() else 'removed'}"
    )
    assert left == [] and project_left == []
    assert not dep.network_exists()


# -- 5. a removed replica whose name no longer resolves (a bug) ------------------------------


@pytest.fixture
def dep_unreachable_dns(
    docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A deployment of its own whose balancers' DNS server is unreachable (compose ``dns:``),
    as on a host with no DNS: Docker's embedded DNS still answers the containers' names, and a
    lookup of any other name (a removed replica's) hangs for 10 s, then fails."""
    with deployment_up(
        docker_client, tmp_path_factory.mktemp("compose-dns"), dns=UNREACHABLE_DNS
    ) as deployment:
        yield deployment


async def keys_by_server(s: aiohttp.ClientSession, port: int, count: int) -> dict[str, list[int]]:
    """Which server answers GET /home?id=<k> for k < count: server id → keys."""
    owners: dict[str, list[int]] = collections.defaultdict(list)
    for key in range(count):
        code, body = await call(s, "GET", port, f"/home?id={key}")
        server = served_by(body)
        assert code == 200 and server is not None, f"GET /home?id={key}: {code} {body}"
        owners[server].append(key)
    return owners


@pytest.mark.timeout(150)
async def test_removed_replica_with_unreachable_dns_leaves_the_others_alone(
    dep_unreachable_dns: Deployment, http: aiohttp.ClientSession
) -> None:
    """``docker rm -f`` of a replica, then 12 concurrent requests for its keys at the leader (a
    busy balancer sends many): those are retried on the next replicas, the healthy replicas stay
    in the ring, and a replacement joins within 10 s.

    Before 73a8b7c (replicas reached by container name) this failed every time: the 12 lookups
    of the removed name hung for 10 s each in uvloop's getaddrinfo threads, aiohttp's connect
    waits for those threads too, so every heartbeat timed out; 9 of the 12 requests got 502, the
    ring emptied and stayed empty (each replacement missed its first heartbeat)."""
    dep = dep_unreachable_dns
    leader = await leader_of(http)
    port = PORTS[leader]
    before = set((await rep(http, port))["replicas"])
    owners = await keys_by_server(http, port, 150)
    victim = (await asyncio.to_thread(dep.replicas))[0]
    victim_name = victim.labels[LABEL_NAME]
    keys = owners[victim_name.removeprefix("Server ")]
    assert keys, f"no key of {victim_name} among the first 150: {dict(owners)}"
    killed = time.monotonic()
    await asyncio.to_thread(victim.remove, force=True)
    burst = await asyncio.gather(
        *(call(http, "GET", port, f"/home?id={keys[i % len(keys)]}") for i in range(12)),
        return_exceptions=True,
    )
    burst_s = time.monotonic() - killed
    outcomes = collections.Counter(
        str(b[0]) if isinstance(b, tuple) else type(b).__name__ for b in burst
    )
    seen: set[str] = set()
    restored_s: float | None = None
    empty_s = 0.0
    members = before
    while time.monotonic() - killed < RESPAWN_LIMIT_S + 2.0:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, AssertionError):
            members = set((await rep(http, port))["replicas"])
            seen |= members
            empty_s += 0.2 if not members else 0.0
            if restored_s is None and len(members) == 3 and victim_name not in members:
                restored_s = time.monotonic() - killed
        await asyncio.sleep(0.2)
    healthy_evicted = sorted(before - {victim_name} - members)
    print(
        f"\n[rm -f, DNS {UNREACHABLE_DNS}] {victim.name} removed; 12 requests for its keys at "
        f"the leader {leader}: {dict(outcomes)} in {burst_s:.1f} s; N=3 without it "
        f"{_s(restored_s)} s after; ring after {RESPAWN_LIMIT_S + 2:.0f} s {sorted(members)} "
        f"(empty for {empty_s:.1f} s); replacements seen {sorted(seen - before)}; healthy "
        f"replicas evicted {healthy_evicted or 'none'}"
    )
    print(dep.logs(tail=12))
    assert not healthy_evicted
    assert restored_s is not None and restored_s <= RESPAWN_LIMIT_S
    assert outcomes == {"200": 12}

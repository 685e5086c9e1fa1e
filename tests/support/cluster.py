"""A cluster of ``python -m balancer`` instances on a redis-server of their own, as real
processes over real sockets, for the multi-instance and reliability tests.

Owns ``Instance`` (one balancer process), ``Cluster`` (instances sharing one Redis; ``close``
stops them and, by pid, every process carrying the run's tag), ``running_cluster``, ``Load`` (a
bounded steady GET load over the instances) and small HTTP helpers.

Cleanup: every balancer instance is started with a unique tag in its environment
(``CHLB_MULTI_INSTANCE_TEST_TAG``), and passes it on to its replicas (``LB_REPLICA_ENV``: a
replica inherits no other variable of the balancer's environment), so after the instances are
stopped every process still carrying the tag (a replica an instance left running,
an instance that would not exit) is found in ``/proc/<pid>/environ`` and killed by its pid.
Nothing else is ever signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.ports import free_port
from tests.support.redis_process import RedisProcess

REPO = Path(__file__).resolve().parents[2]
TAG_ENV = "CHLB_MULTI_INSTANCE_TEST_TAG"
LEASE_TTL_S = 1.5
ANNOUNCE_TTL_S = 3.0  # app._ANNOUNCE_EVERY_S * 3
FAST_ARGS = (
    *("--replicas", "3"),
    *("--heartbeat-interval-s", "0.2"),
    *("--heartbeat-timeout-s", "0.2"),
    *("--heartbeat-fails", "2"),
    *("--leader-ttl-s", str(LEASE_TTL_S)),
    *("--spawn-timeout-s", "10"),
)
MEMBERSHIP_KEY = "lb:membership"
SERVER_PREFIX = "Hello from Server: "

Json = dict[str, Any]


# -- processes ---------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def tagged_pids(tag: str) -> list[int]:
    """Every live process whose environment carries this run's tag (instances and replicas)."""
    needle = f"{TAG_ENV}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env:
            found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def replica_processes(tag: str) -> list[int]:
    """The live ``python -m server`` processes the instances of this run started."""
    return [p for p in tagged_pids(tag) if " -m server" in cmdline(p) and pid_alive(p)]


def wait_gone(pids: Sequence[int], timeout_s: float) -> list[int]:
    """Poll until none of ``pids`` is alive; the ones still alive after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


class Instance:
    """One ``python -m balancer`` in shared mode, in its own session, logging to a file."""

    def __init__(
        self, name: str, redis_url: str, log_dir: Path, tag: str, args: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        argv = [
            sys.executable,
            *("-m", "balancer"),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--redis-url", redis_url, "--instance-id", name),
            *FAST_ARGS,
            *args,
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env={**os.environ, TAG_ENV: tag, "LB_REPLICA_ENV": TAG_ENV},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_listening(self, timeout_s: float = 40.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{self.name} did not listen within {timeout_s}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL (by pid): the instance gets no chance to release its lease or replicas."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time. The exit code."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return "(no log)"


def http_status(url: str) -> Json | None:
    """``GET /lb/status`` without aiohttp (used in teardown, outside any event loop)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/lb/status", timeout=2.0) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return doc if isinstance(doc, dict) else None


class Cluster:
    """Instances sharing ``redis``; ``close`` stops them all and everything they started."""

    def __init__(self, workdir: Path, redis: RedisProcess, args: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.redis = redis
        self.args = tuple(args)  # extra balancer flags for every instance
        self.tag = uuid.uuid4().hex
        self.instances: list[Instance] = []

    def start(self, count: int) -> None:
        """The first instance alone (it wins the lease and boots the replicas before it
        listens), then the others together."""
        self.instances.append(self._new(1))
        self.instances[0].wait_listening()
        rest = [self._new(i) for i in range(2, count + 1)]
        self.instances.extend(rest)
        for instance in rest:
            instance.wait_listening()

    def _new(self, number: int) -> Instance:
        return Instance(f"lb-{number}", self.redis.url, self.workdir, self.tag, self.args)

    def close(self) -> None:
        """Followers first, the leader last (the last one out stops the replicas), then every
        process still carrying the tag, by pid."""
        running = [i for i in self.instances if i.running]
        leaders = {i.name for i in running if (http_status(i.url) or {}).get("leader") is True}
        for instance in sorted(running, key=lambda i: i.name in leaders):
            instance.terminate()
        leftovers = tagged_pids(self.tag)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stuck = wait_gone(leftovers, 5.0)
        assert not stuck, f"processes of this test still alive after SIGKILL: {stuck}"

    def logs(self) -> str:
        parts = [
            f"--- {i.name} (pid {i.pid}, {i.log_path}) ---\n{i.tail()}" for i in self.instances
        ]
        parts.append(f"--- redis (pid {self.redis.pid}) ---\n{self.redis.log_tail()}")
        return "\n".join(parts)

    @contextlib.contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            print(self.logs())
            raise


@contextlib.contextmanager
def running_cluster(
    workdir: Path, count: int, *, persistent: bool, args: Sequence[str] = ()
) -> Iterator[Cluster]:
    redis = RedisProcess(workdir / "redis", persistent=persistent)
    redis.start()
    cluster = Cluster(workdir, redis, args)
    try:
        try:
            cluster.start(count)
        except BaseException:
            print(cluster.logs())
            raise
        yield cluster
    finally:
        try:
            cluster.close()
        finally:
            redis.stop()


# -- HTTP helpers ------------------------------------------------------------------------------


def session(limit: int = 50) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=10),
    )


async def call(
    s: aiohttp.ClientSession, method: str, url: str, body: Json | None = None
) -> tuple[int, Json]:
    async with s.request(method, url, json=body) as resp:
        return resp.status, json.loads(await resp.read())


async def status_of(s: aiohttp.ClientSession, instance: Instance) -> Json:
    code, doc = await call(s, "GET", f"{instance.url}/lb/status")
    assert code == 200, doc
    return doc


async def rep_of(s: aiohttp.ClientSession, instance: Instance) -> Json:
    code, doc = await call(s, "GET", f"{instance.url}/rep")
    assert code == 200, doc
    return doc["message"]  # type: ignore[no-any-return]


def agreement(statuses: Sequence[Json], replicas: int | None) -> str | None:
    """Why these statuses are not a converged cluster, or None when they are: the store is
    reachable, one leader, the same epoch and fingerprint everywhere, (``replicas`` members,
    all alive)."""
    if any(st["store"] != "ok" for st in statuses):
        return "store unavailable"
    if sum(st["leader"] for st in statuses) != 1:
        return f"{sum(st['leader'] for st in statuses)} leaders"
    if len({(st["epoch"], st["fingerprint"]) for st in statuses}) != 1:
        return f"epochs {[(st['epoch'], st['fingerprint']) for st in statuses]}"
    if replicas is not None:
        members = statuses[0]["replicas"]
        if len(members) != replicas or not all(r["alive"] for r in members):
            return f"replicas {[(r['name'], r['alive']) for r in members]}"
    return None


async def wait_converged(
    s: aiohttp.ClientSession,
    instances: Sequence[Instance],
    timeout_s: float,
    *,
    replicas: int | None = 3,
) -> tuple[float, list[Json]]:
    """Poll every instance's ``/lb/status`` until they agree (see ``agreement``)."""
    started = time.monotonic()
    why = "no answer"
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, AssertionError):
            statuses = list(await asyncio.gather(*(status_of(s, i) for i in instances)))
            why = agreement(statuses, replicas) or ""
            if not why:
                return time.monotonic() - started, statuses
        await asyncio.sleep(0.01)
    raise AssertionError(f"instances did not converge within {timeout_s}s: {why}")


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def served_by(body: Json) -> str:
    message = body["message"]
    assert message.startswith(SERVER_PREFIX), body
    return message[len(SERVER_PREFIX) :]  # type: ignore[no-any-return]


def is_contract_error(body: Json) -> bool:
    return (
        body.get("status") == "failure"
        and isinstance(body.get("message"), str)
        and body["message"].startswith("<Error> ")
    )


class Load:
    """``clients`` loops of ``GET /home?id=<i>`` over every instance in turn, bounded in time and
    count; a failure is anything but 200 from a replica."""

    def __init__(self, instances: Sequence[Instance], clients: int, max_requests: int) -> None:
        self.instances = instances
        self.clients = clients
        self.max_requests = max_requests
        self.sent = 0
        self.failures: list[str] = []
        self.sent_at: list[float] = []
        self.latencies: list[tuple[float, float]] = []  # (sent at, seconds) of each success
        self.stop = asyncio.Event()

    async def run(self, s: aiohttp.ClientSession, duration_s: float) -> None:
        deadline = time.monotonic() + duration_s
        await asyncio.gather(*(self._client(s, c, deadline) for c in range(self.clients)))

    async def _client(self, s: aiohttp.ClientSession, c: int, deadline: float) -> None:
        i = c
        while not self.stop.is_set() and time.monotonic() < deadline:
            if self.sent >= self.max_requests:
                return
            self.sent += 1
            instance = self.instances[i % len(self.instances)]
            sent = time.monotonic()
            self.sent_at.append(sent)
            try:
                code, body = await call(s, "GET", f"{instance.url}/home?id={i}")
                if code != 200 or not body["message"].startswith(SERVER_PREFIX):
                    self.failures.append(f"{instance.name} id={i}: {code} {body}")
                else:
                    self.latencies.append((sent, time.monotonic() - sent))
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                self.failures.append(f"{instance.name} id={i}: {exc!r}")
            i += self.clients
            await asyncio.sleep(0.002)  # steady, not saturating a 2-core machine


ClusterFactory = Callable[..., Cluster]  # (count, *, persistent, args=()) → a started cluster

"""A Redis master, its replicas and Sentinels watching them, as real processes on 127.0.0.1.

Owns ``RedisNode`` (a ``RedisProcess`` that may start as a replica of another), ``SentinelProcess``
(one ``redis-sentinel`` with its own config file, which Sentinel rewrites as it learns) and
``SentinelGroup`` (master + replicas + Sentinels, started together, stopped by pid). Timeouts are
small (down after 1 s) so a failover takes a few seconds. Only the processes these objects
started are ever signalled, by their pids.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import RedisError

from tests.support.ports import free_port
from tests.support.redis_process import RedisProcess, answers_ping

MASTER_NAME = "chlb"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def sentinel_binary() -> str | None:
    return shutil.which("redis-sentinel")


def client(port: int, timeout_s: float = 2.0) -> redis.Redis:
    """A synchronous client of one server or Sentinel (call it off the event loop)."""
    return redis.Redis(port=port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def command(port: int, *args: str) -> Any:
    with client(port) as c:
        return c.execute_command(*args)


class RedisNode(RedisProcess):
    """A redis-server without persistence, optionally started as a replica of ``master``."""

    def __init__(self, workdir: Path, *, replica_of: int | None = None) -> None:
        super().__init__(workdir, persistent=False)
        self.replica_of = replica_of

    def _argv(self) -> list[str]:
        argv = super()._argv()
        if self.replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return argv


class SentinelProcess:
    """One ``redis-sentinel`` watching ``master_port`` under ``MASTER_NAME``."""

    def __init__(self, workdir: Path, master_port: int, quorum: int) -> None:
        binary = sentinel_binary()
        if binary is None:
            raise RuntimeError("redis-sentinel is not installed")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = workdir / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"logfile {workdir / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.proc = subprocess.Popen(
            [binary, str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not answers_ping(self.port, timeout_s=0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-sentinel on {self.port} did not start:\n{self.log()}")
            time.sleep(0.02)

    def master(self) -> int | None:
        """The port of the master this Sentinel names now (None: it cannot say)."""
        with contextlib.suppress(RedisError):
            reply = command(self.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
            if reply:
                return int(reply[1])
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        try:
            return "".join((self.workdir / "sentinel.log").read_text().splitlines(True)[-20:])
        except OSError:
            return "(no log)"


class SentinelGroup:
    """A master, ``replicas`` replicas of it, and ``sentinels`` Sentinels (majority quorum)."""

    def __init__(self, workdir: Path, *, replicas: int = 1, sentinels: int = 3) -> None:
        self.master = RedisNode(workdir / "redis-0")
        self.master.start()
        self.replicas = [
            RedisNode(workdir / f"redis-{i + 1}", replica_of=self.master.port)
            for i in range(replicas)
        ]
        self.nodes = [self.master, *self.replicas]
        self.sentinels: list[SentinelProcess] = []
        try:
            for node in self.replicas:
                node.start()
            self.wait_replicated(10.0)
            quorum = sentinels // 2 + 1
            self.sentinels = [
                SentinelProcess(workdir / f"sentinel-{i}", self.master.port, quorum)
                for i in range(sentinels)
            ]
            for sentinel in self.sentinels:
                sentinel.wait_ready()
            self.wait_watched(15.0)
        except BaseException:
            self.stop()
            raise

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    @property
    def flag(self) -> str:
        """The ``--redis-sentinel`` value."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def wait_replicated(self, timeout_s: float) -> None:
        """Until every replica reports its link to the master up."""
        deadline = time.monotonic() + timeout_s
        for node in self.replicas:
            while command(node.port, "INFO", "replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {node.port} did not sync:\n{node.log_tail()}")
                time.sleep(0.05)

    def wait_watched(self, timeout_s: float) -> None:
        """Until every Sentinel knows the replicas and the other Sentinels (a failover can
        then be agreed on and carried out)."""
        deadline = time.monotonic() + timeout_s
        for sentinel in self.sentinels:
            while True:
                with contextlib.suppress(RedisError), client(sentinel.port) as c:
                    state = c.sentinel_master(MASTER_NAME)
                    if (
                        state["num-slaves"] == len(self.replicas)
                        and state["num-other-sentinels"] == len(self.sentinels) - 1
                    ):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sentinel {sentinel.port} not ready:\n{sentinel.log()}")
                time.sleep(0.1)

    def master_port(self) -> int | None:
        """The master's port as a majority of the Sentinels name it (None: no majority)."""
        named = [s.master() for s in self.sentinels]
        for port in set(named):
            if port is not None and named.count(port) > len(named) // 2:
                return port
        return None

    def moved_from(self, port: int) -> bool:
        """Whether a majority of the Sentinels name a master other than ``port``."""
        now = self.master_port()
        return now is not None and now != port

    def force_failover(self, timeout_s: float = 15.0) -> None:
        """``SENTINEL FAILOVER`` (no agreement needed), retried while the Sentinel answers that
        no replica is suitable yet (its view of the replicas is refreshed every few seconds)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                command(self.sentinels[0].port, "SENTINEL", "FAILOVER", MASTER_NAME)
                return
            except RedisError as exc:
                if "NOGOODSLAVE" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def node(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.stop()

    def logs(self) -> str:
        parts = [f"--- redis {n.port} (pid {n.pid}) ---\n{n.log_tail()}" for n in self.nodes]
        parts += [f"--- sentinel {s.port} ---\n{s.log()}" for s in self.sentinels]
        return "\n".join(parts)


@contextlib.contextmanager
def sentinel_group(
    workdir: Path, *, replicas: int = 1, sentinels: int = 3
) -> Iterator[SentinelGroup]:
    group = SentinelGroup(workdir, replicas=replicas, sentinels=sentinels)
    try:
        yield group
    finally:
        group.stop()

"""Several Swarm nodes on one machine: a ``dockerd`` per network namespace, joined to a swarm.

``Nodes`` makes a bridge on the host with one veth per node into a network namespace the test
creates (10.231.<net>.1 on the bridge, .11, .12, … in the namespaces), starts a ``dockerd`` in
each namespace (``nsenter --net``: ``ip netns exec`` would remount /sys and hide the cgroup
hierarchies dockerd needs) with its own data root, exec root and socket, the ``vfs`` storage
driver (no overlayfs inside overlayfs) and ``DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1`` (else each
task first tries to pull its image, which offline waits for a DNS timeout), inits a swarm on the
first node (advertising its namespace address: the host's swarm, advertised on 127.0.0.1, cannot
take nodes in other namespaces) and joins the others as workers, then loads the images on every
node (``docker save | docker load``). Bridged traffic passes the host's ``FORWARD`` chain, which
Docker sets to DROP: a ``DOCKER-USER`` rule accepts the bridge's own traffic while the nodes
exist. ``fail(node)`` takes a node off the network and SIGKILLs its daemon; ``close`` brings
everything down and removes it (a failed node's daemon is started again first, so that it stops
its own containers). Every step that fails raises ``NodesUnavailable`` with what failed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker


class NodesUnavailable(Exception):
    """This machine cannot run the nodes; the message says which step failed and how."""


def run(*argv: str, timeout_s: float = 60.0, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
    )
    if result.returncode != 0:
        raise NodesUnavailable(f"`{' '.join(argv)}` failed: {result.stderr.strip()[-400:]}")
    return result.stdout


@dataclass
class Node:
    index: int
    netns: str
    veth: str
    address: str
    root: Path
    process: subprocess.Popen[bytes] | None = None
    client: Any = None

    @property
    def socket(self) -> str:
        return str(self.root / "docker.sock")

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def start_daemon(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "dockerd.pid").unlink(missing_ok=True)
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115  # the daemon's, closed by it
        env = {**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"}
        self.process = subprocess.Popen(
            [
                *("nsenter", f"--net=/var/run/netns/{self.netns}"),
                "/usr/sbin/dockerd",
                *("--data-root", str(self.root / "data")),
                *("--exec-root", str(self.root / "exec")),
                *("--pidfile", str(self.root / "dockerd.pid")),
                *("-H", self.docker_host),
                "--storage-driver=vfs",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NodesUnavailable(f"dockerd of node {self.index} exited: {self.log_tail()}")
            # Asked with the CLI: the SDK's client leaks a socket when its version check fails.
            answered = subprocess.run(
                ["docker", "-H", self.docker_host, "version"], capture_output=True, check=False
            )
            if answered.returncode == 0:
                self.client = docker.DockerClient(base_url=self.docker_host, timeout=120)
                return
            time.sleep(0.5)
        raise NodesUnavailable(f"dockerd of node {self.index} did not answer: {self.log_tail()}")

    def stop_daemon(self, sig: int = signal.SIGTERM, wait_s: float = 60.0) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(wait_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10.0)

    def log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            text = (self.root / "dockerd.log").read_text(errors="replace")
            return " | ".join(text.strip().splitlines()[-lines:])
        return "(no log)"


@dataclass
class Nodes:
    count: int = 3
    base: Path = Path("/tmp")
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    net: int = 231
    nodes: list[Node] = field(default_factory=list)
    bridge_up: bool = False
    rule_added: bool = False
    failed: set[int] = field(default_factory=set)

    @property
    def bridge(self) -> str:
        return f"chlbbr{self.tag}"

    @property
    def rule(self) -> list[str]:
        return ["DOCKER-USER", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]

    @staticmethod
    def check_machine() -> None:
        """Raises NodesUnavailable unless this machine has what the nodes need."""
        if os.geteuid() != 0:
            raise NodesUnavailable("needs root (network namespaces, a bridge, dockerd)")
        for tool in ("ip", "nsenter", "iptables", "/usr/sbin/dockerd", "docker"):
            if shutil.which(tool) is None:
                raise NodesUnavailable(f"{tool} is not installed")

    def up(self, images: list[str]) -> None:
        self.check_machine()
        run("ip", "link", "add", self.bridge, "type", "bridge")
        self.bridge_up = True
        run("ip", "addr", "add", f"10.{self.net}.0.1/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        run("iptables", "-I", *self.rule)
        self.rule_added = True
        for i in range(1, self.count + 1):
            self.nodes.append(self._node(i))
        manager, *workers = self.nodes
        manager.client.swarm.init(
            advertise_addr=manager.address, listen_addr=f"{manager.address}:2377"
        )
        token = manager.client.swarm.attrs["JoinTokens"]["Worker"]
        for node in workers:
            node.client.swarm.join(
                remote_addrs=[f"{manager.address}:2377"],
                join_token=token,
                advertise_addr=node.address,
                listen_addr=f"{node.address}:2377",
            )
        for node in self.nodes:
            self._load(node, images)

    def _node(self, i: int) -> Node:
        node = Node(
            i,
            f"chlbns{self.tag}{i}",
            f"chlbve{self.tag}{i}",
            f"10.{self.net}.0.{10 + i}",
            self.base / f"chlb-node-{self.tag}-{i}",
        )
        run("ip", "netns", "add", node.netns)
        run("ip", "link", "add", node.veth, "type", "veth", "peer", "name", f"{node.veth}p")
        run("ip", "link", "set", f"{node.veth}p", "netns", node.netns)
        run("ip", "link", "set", node.veth, "master", self.bridge, "up")
        inside = ["ip", "netns", "exec", node.netns]
        run(*inside, "ip", "addr", "add", f"{node.address}/24", "dev", f"{node.veth}p")
        run(*inside, "ip", "link", "set", f"{node.veth}p", "up")
        run(*inside, "ip", "link", "set", "lo", "up")
        run(*inside, "ip", "route", "add", "default", "via", f"10.{self.net}.0.1")
        self.nodes.append(node)  # (so close() cleans up a node whose daemon fails to start)
        node.start_daemon()
        self.nodes.remove(node)
        return node

    @staticmethod
    def _load(node: Node, images: list[str]) -> None:
        save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
        env = {**os.environ, "DOCKER_HOST": node.docker_host}
        loaded = subprocess.run(
            ["docker", "load", "-q"],
            stdin=save.stdout,
            capture_output=True,
            env=env,
            timeout=300,
            check=False,
        )
        if save.stdout is not None:
            save.stdout.close()
        if save.wait(60) != 0 or loaded.returncode != 0:
            raise NodesUnavailable(f"loading {images} on node {node.index}: {loaded.stderr!r}")

    def node_of(self, node_id: str) -> Node:
        """The node whose swarm node id is ``node_id``."""
        manager = self.nodes[0]
        addr = manager.client.nodes.get(node_id).attrs["Status"]["Addr"]
        return next(n for n in self.nodes if n.address == addr)

    def fail(self, node: Node) -> None:
        """The node goes off the network and its daemon is SIGKILLed."""
        self.failed.add(node.index)
        run("ip", "link", "set", node.veth, "down")
        node.stop_daemon(signal.SIGKILL, wait_s=10.0)

    def close(self) -> list[str]:
        """Everything down and removed; what could not be (for the test's report)."""
        problems: list[str] = []
        self._empty()
        for node in reversed(self.nodes):  # the workers leave first, the manager last
            with contextlib.suppress(Exception):
                node.client.swarm.leave(force=True)
            node.stop_daemon()
            if node.process is not None and node.process.poll() is None:
                problems.append(f"dockerd of node {node.index} did not stop")
            for cmd in (["ip", "netns", "del", node.netns], ["ip", "link", "del", node.veth]):
                subprocess.run(cmd, capture_output=True, check=False)
            _unmount_under(node.root)  # dockerd bind-mounts its data root onto itself
            shutil.rmtree(node.root, ignore_errors=True)
        if self.rule_added:
            subprocess.run(["iptables", "-D", *self.rule], capture_output=True, check=False)
        if self.bridge_up:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        return problems

    def _empty(self) -> None:
        """Failed nodes back (so they stop what they left running), every service removed."""
        for node in self.nodes:
            if node.index in self.failed:
                with contextlib.suppress(NodesUnavailable):
                    run("ip", "link", "set", node.veth, "up")
                    node.start_daemon()
        if not self.nodes or self.nodes[0].client is None:
            return
        with contextlib.suppress(Exception):
            for service in self.nodes[0].client.services.list():
                service.remove()
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and any(self._containers(n) for n in self.nodes):
            time.sleep(0.5)

    @staticmethod
    def _containers(node: Node) -> list[Any]:
        if node.client is None:
            return []
        with contextlib.suppress(Exception):
            found: list[Any] = node.client.containers.list()
            return found
        return []


def _unmount_under(root: Path) -> None:
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in reversed(points):
        if point == str(root) or point.startswith(f"{root}/"):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

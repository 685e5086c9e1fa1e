"""A real DNS server for the discovery tests: dnsmasq on a loopback port, answering from a hosts
file the test rewrites (SIGHUP reloads it) and from SRV records fixed at start.

Owns ``Dnsmasq``. It answers only for its own domain (``--local=/<domain>/``: an unknown name is
NXDOMAIN, a name without AAAA records an empty answer, never REFUSED) with the TTL ``ttl_s``
(``--local-ttl``). Started with ``--no-daemon`` so the test holds its PID; stopped by that PID.
Skips the test when ``/usr/sbin/dnsmasq`` (Debian's ``dnsmasq-base``) is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.support.ports import free_port

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


class Dnsmasq:
    def __init__(
        self,
        workdir: Path,
        *,
        domain: str = "web",
        ttl_s: int = 1,
        srv: Sequence[tuple[str, str, int]] = (),
    ) -> None:
        """``srv``: (SRV name, target, port) records."""
        if not os.access(DNSMASQ, os.X_OK):
            pytest.skip("dnsmasq not installed (Debian: apt-get install dnsmasq-base)")
        self.port = free_port()
        self.server = f"127.0.0.1:{self.port}"
        self.hosts_path = workdir / "dns-hosts"
        self.log_path = workdir / "dnsmasq.log"
        self.hosts_path.write_text("")
        args = [
            DNSMASQ,
            "--no-daemon",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            f"--addn-hosts={self.hosts_path}",
            f"--local-ttl={ttl_s}",
            f"--local=/{domain}/",
            "--pid-file=",
            "--log-facility=-",
            *(f"--srv-host={name},{target},{port}" for name, target, port in srv),
        ]
        if os.geteuid() == 0:
            args.append("--user=root")  # no privileges to drop: stay who we are
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self._wait_listening()

    def _wait_listening(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dnsmasq exited: {self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("dnsmasq did not start listening")

    def set_hosts(self, records: Mapping[str, Sequence[str]]) -> None:
        """Answer ``name`` with ``addresses`` for each item from now on (SIGHUP reloads)."""
        lines = [
            f"{address} {name}" for name, addresses in records.items() for address in addresses
        ]
        tmp = self.hosts_path.with_suffix(".new")
        tmp.write_text("".join(f"{line}\n" for line in lines))
        tmp.replace(self.hosts_path)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

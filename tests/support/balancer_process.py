"""One ``python -m balancer`` on a free loopback port, as a real process, for the tests that
drive the embedded default over real sockets.

Owns ``BalancerProcess``: started with the given flags, logging to a file, stopped by its PID
(SIGINT, so it stops its own replicas; SIGKILL if it does not exit in time).
"""

from __future__ import annotations

import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from tests.support.ports import free_port


def _limit_descriptors(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


class BalancerProcess:
    def __init__(
        self,
        log_path: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        nofile: int | None = None,
    ) -> None:
        """``nofile``: the balancer's descriptor limit, soft and hard (it cannot raise it)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "balancer", "--port", str(self.port), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,  # None: this process's environment
                preexec_fn=None if nofile is None else partial(_limit_descriptors, nofile),
            )

    def wait_listening(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"balancer exited: {self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("balancer did not start listening")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

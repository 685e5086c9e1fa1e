"""A redis-server a test owns: started, stopped and restarted on the SAME port and data dir.

``tests/support/redis_server.py`` gives the session one Redis that lives as long as the session;
a test that takes Redis away (an outage) needs its own, which this is. With ``persistent=True``
the server keeps an append-only file fsynced on every write (``--appendonly yes --appendfsync
always``) in its directory, so a restart comes back with the data it had, as a production Redis
does; with ``persistent=False`` a restart starts empty.

Only the process this object started is ever signalled, by its pid.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.ports import free_port


def redis_binary() -> str | None:
    return shutil.which("redis-server")


def answers_ping(port: int, timeout_s: float = 0.5) -> bool:
    """One inline ``PING`` over a raw socket: True on ``+PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """One redis-server on 127.0.0.1 (see the module docstring)."""

    def __init__(self, workdir: Path, *, persistent: bool = True, port: int | None = None) -> None:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistent = persistent
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _argv(self) -> list[str]:
        persistence = (
            ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--save", "", "--appendonly", "no"]
        )
        return [
            self.binary,
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--dir", str(self.workdir)),
            *("--logfile", str(self.workdir / "redis.log")),
            *persistence,
        ]

    def start(self, timeout_s: float = 10.0) -> float:
        """Start (or restart) the server; returns once it answers PING, with the seconds taken."""
        assert not self.running, "already running"
        started = time.monotonic()
        self.proc = subprocess.Popen(
            self._argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.starts += 1
        while not answers_ping(self.port, timeout_s=0.2):
            if self.proc.poll() is not None or time.monotonic() - started > timeout_s:
                self.stop()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not come up; log:\n{self.log_tail()}"
                )
            time.sleep(0.02)
        return time.monotonic() - started

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        """Signal the server (by its pid) and wait for it to exit; SIGKILL after ``timeout_s``."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "".join((self.workdir / "redis.log").read_text().splitlines(True)[-lines:])
        except OSError:
            return "(no log)"

"""Replicas as local ``server`` processes on loopback ports (the embedded default).

Owns ``ProcessRuntime``. The runtime binds each replica's listening socket itself (port 0 on the
replica host) and hands the file descriptor to the child, so there is no window in which another
program can take the port between choosing and binding it. Children run in their own session, so
a Ctrl-C meant for the balancer's terminal does not kill them behind the balancer's back.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

from balancer.errors import RuntimeFailure
from balancer.runtime import ReplicaHandle

log = logging.getLogger(__name__)


@dataclass
class _Child:
    handle: ReplicaHandle
    process: asyncio.subprocess.Process


class ProcessRuntime:
    """Starts ``python -m server`` children on ``host`` (see the module docstring)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        command: Sequence[str] = (sys.executable, "-m", "server"),
        stop_grace_s: float = 3.0,
    ) -> None:
        self._host = host
        self._command = list(command)
        self._stop_grace_s = stop_grace_s
        self._children: dict[str, _Child] = {}

    async def spawn(self, name: str, server_id: str) -> ReplicaHandle:
        if name in self._children:
            raise RuntimeFailure(f"replica {name!r} is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, 0))
            sock.listen(1024)
            port = sock.getsockname()[1]
            process = await asyncio.create_subprocess_exec(
                *self._command,
                "--fd",
                str(sock.fileno()),
                env={**os.environ, "SERVER_ID": server_id},
                pass_fds=(sock.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot start replica {name!r}: {exc}") from exc
        finally:
            sock.close()  # the child holds its own copy of the descriptor
        handle = ReplicaHandle(name, server_id, f"{self._host}:{port}", process.pid)
        self._children[name] = _Child(handle, process)
        log.info(
            "spawned replica %s (id %s) pid=%d at %s", name, server_id, process.pid, handle.address
        )
        return handle

    async def stop(self, name: str, *, force: bool = False) -> None:
        child = self._children.pop(name, None)
        if child is None:
            return
        process = child.process
        if process.returncode is None:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL if force else signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._stop_grace_s)
            except TimeoutError:
                with suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        log.info("stopped replica %s pid=%d (exit %s)", name, process.pid, process.returncode)

    async def list(self) -> list[ReplicaHandle]:
        return [c.handle for c in self._children.values() if c.process.returncode is None]

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self._children)))

"""Killing one replica for A-3, behind the balancer's back.

Owns the two ways to do it: a ``--kill-cmd`` template run without a shell (placeholders
``{name}`` = the ``/rep`` name, ``{id}`` = its one-token id, ``{pid}``; e.g. for the Docker
deployment ``docker rm -f chlb-{id}``), or, when ``/lb/status`` lists a ``pid`` for the replica
and the balancer URL is on loopback (the embedded default: replicas are local processes),
``os.kill(pid, SIGKILL)``. Anything else fails with ``KillError`` saying what to pass.
Must not import anything from ``balancer`` or ``server``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shlex
import signal
from typing import Any
from urllib.parse import urlsplit

from loadgen.admin import Admin
from loadgen.contract import server_id


class KillError(RuntimeError):
    """The replica could not be killed (or no way to kill it was available)."""


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def render_command(template: str, name: str, pid: int | None) -> list[str]:
    """The argv for ``template`` (split first, so a name with a space stays one argument)."""
    fields = {"name": name, "id": server_id(name), "pid": "" if pid is None else str(pid)}
    try:
        return [part.format(**fields) for part in shlex.split(template)]
    except (KeyError, IndexError, ValueError) as exc:
        raise KillError(f"bad --kill-cmd {template!r}: use {{name}}, {{id}}, {{pid}}") from exc


async def _run(argv: list[str], timeout_s: float = 60.0) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        raise KillError(f"--kill-cmd {argv}: {exc}") from exc
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()  # our own child
        await proc.wait()
        raise KillError(f"--kill-cmd {argv} did not finish in {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        why = stderr.decode(errors="replace").strip()
        raise KillError(f"--kill-cmd {argv} exited {proc.returncode}: {why}")


def _pid_in(status: dict[str, Any], name: str) -> int | None:
    for replica in status.get("replicas", []):
        if replica.get("name") == name and isinstance(replica.get("pid"), int):
            return int(replica["pid"])
    return None


async def find_pid(admin: Admin, name: str) -> int | None:
    """The replica's pid from ``/lb/status``; only the leader knows it, so a follower's answer
    is followed by the leader's."""
    status = await admin.status()
    if (pid := _pid_in(status, name)) is not None or status.get("leader"):
        return pid
    for instance in status.get("instances", []):
        if instance.get("leader") and isinstance(instance.get("url"), str):
            return _pid_in(await admin.status(instance["url"]), name)
    return None


async def kill_replica(admin: Admin, name: str, kill_cmd: str | None) -> str:
    """Kill replica ``name``; return how it was done (for the report)."""
    pid = await find_pid(admin, name) if kill_cmd is None or "{pid}" in kill_cmd else None
    if kill_cmd is not None:
        argv = render_command(kill_cmd, name, pid)
        await _run(argv)
        return shlex.join(argv)
    if pid is None:
        raise KillError(
            f"/lb/status lists no pid for {name!r} (replicas are not local processes?): pass "
            "--kill-cmd, e.g. --kill-cmd 'docker rm -f chlb-{id}' for the Docker deployment"
        )
    if not is_loopback(admin.base):
        raise KillError(
            f"{admin.base} is not a loopback address, so pid {pid} is not a process here: "
            "pass --kill-cmd"
        )
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError as exc:
        raise KillError(f"kill -9 {pid} ({name}): {exc}") from exc
    return f"os.kill({pid}, SIGKILL)"

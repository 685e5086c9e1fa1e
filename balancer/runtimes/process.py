"""Replicas as local ``server`` processes on loopback ports (the embedded default).

Owns ``ProcessRuntime``. The runtime binds each replica's listening socket itself (port 0 on the
replica host) and hands the file descriptor to the child, so there is no window in which another
program can take the port between choosing and binding it. Children run in their own session, so
a Ctrl-C meant for the balancer's terminal does not kill them behind the balancer's back, and they
outlive the balancer that started them: another instance adopts them by pid. A handle's
``locator`` is ``"<pid>:<start time>"`` (the start time in clock ticks since boot, from
``/proc/<pid>/stat``; empty where there is no ``/proc``), so a recycled pid is never mistaken for
the replica. ``describe`` shows the pid.

A replica gets an allow-listed environment (``replica_environment``), never the balancer's: the
balancer's holds its secrets (``LB_ADMIN_TOKEN``, ``LB_HASH_SEED``, a password in
``LB_REDIS_URL``, whatever else its supervisor exported), and a replica's environment can be
read by the code it runs and by every process of the same user (``/proc/<pid>/environ``). The
allow-list is what ``python -m server`` needs to start and behave like the balancer's own
interpreter; an operator adds names on purpose with ``--replica-env`` (nginx's ``env``
directive), never an ``LB_*`` name. The Docker runtime likewise gives its containers
``SERVER_ID`` alone.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass

from balancer.errors import RuntimeFailure
from balancer.runtimes.base import Description, ReplicaHandle
from balancer.setting import check, comma_list, derived, env_name_checks, setting

log = logging.getLogger(__name__)


_POLL_S = 0.02

# What a replica inherits from the balancer's environment: the search path (PATH; PYTHONPATH,
# PYTHONHOME and VIRTUAL_ENV, where the ``server`` package or the interpreter's home come from
# there; HOME for user site-packages), locale and time zone (LANG, LANGUAGE, LC_*, TZ), the
# temporary directory and the interpreter's output flags. Nothing else, whatever its name.
INHERITED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONPYCACHEPREFIX",
    }
)
INHERITED_ENV_PREFIX = "LC_"
RESERVED_ENV_PREFIX = "LB_"  # the balancer's settings (its secrets among them): never passed


def replica_environment(
    environ: Mapping[str, str], server_id: str, extra: Iterable[str] = ()
) -> dict[str, str]:
    """The environment of a replica process, taken from the balancer's ``environ``.

    Args:
        environ: the balancer's environment (``os.environ``).
        server_id: the replica's id, its ``SERVER_ID``.
        extra: further names to pass when ``environ`` has them (``--replica-env``).

    Returns:
        ``INHERITED_ENV`` and ``LC_*`` names found in ``environ``, the ``extra`` ones, and
        ``SERVER_ID``.

    Raises:
        ValueError: when ``extra`` names an ``LB_*`` variable.
    """
    wanted = INHERITED_ENV | checked_pass_env(extra)
    env = {
        name: value
        for name, value in environ.items()
        if name in wanted or name.startswith(INHERITED_ENV_PREFIX)
    }
    env["SERVER_ID"] = server_id
    return env


def process_locator(pid: int, start_time: str) -> str:
    """The locator of process ``pid`` started at ``start_time`` ("" when unknown)."""
    return f"{pid}:{start_time}"


def _parse_locator(locator: str) -> tuple[int, str] | None:
    """(pid, start time) from a ``process_locator``; None when it is not one."""
    pid, sep, start_time = locator.partition(":")
    if not sep or not pid.isdigit() or int(pid) == 0:  # 0 would signal our own process group
        return None
    return int(pid), start_time


def checked_pass_env(names: Iterable[str]) -> frozenset[str]:
    """``names`` as a set; ValueError if one is the balancer's own (``LB_*``)."""
    chosen = frozenset(names)
    refused = sorted(n for n in chosen if n.startswith(RESERVED_ENV_PREFIX))
    if refused:
        raise ValueError(
            f"a replica never gets the balancer's {RESERVED_ENV_PREFIX}* settings: "
            f"{', '.join(refused)}"
        )
    return chosen


@dataclass
class _Child:
    handle: ReplicaHandle
    pid: int
    start_time: str  # "" when unknown
    process: asyncio.subprocess.Process | None  # None: adopted, not our child

    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.returncode is None
        return _same_process(self.pid, self.start_time)


class ProcessRuntime:
    """Starts ``python -m server`` children on ``host`` (see the module docstring)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        command: Sequence[str] = (sys.executable, "-m", "server"),
        stop_grace_s: float = 3.0,
        pass_env: Iterable[str] = (),
    ) -> None:
        """``pass_env``: names passed to replicas besides the allow-list (never ``LB_*``:
        ValueError)."""
        self._host = host
        self._command = list(command)
        self._pass_env = checked_pass_env(pass_env)
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
                env=replica_environment(os.environ, server_id, self._pass_env),
                pass_fds=(sock.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot start replica {name!r}: {exc}") from exc
        finally:
            sock.close()  # the child holds its own copy of the descriptor
        start_time = _start_time(process.pid)
        locator = process_locator(process.pid, start_time)
        handle = ReplicaHandle(name, server_id, f"{self._host}:{port}", locator)
        self._children[name] = _Child(handle, process.pid, start_time, process)
        log.info(
            "spawned replica %s (id %s) pid=%d at %s", name, server_id, process.pid, handle.address
        )
        return handle

    async def stop(self, name: str, *, force: bool = False) -> None:
        child = self._children.pop(name, None)
        if child is None:
            return
        if child.process is None:
            await self._stop_adopted(child, force)
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

    async def adopt(self, handle: ReplicaHandle) -> bool:
        if handle.name in self._children:
            return self._children[handle.name].running
        located = _parse_locator(handle.locator)
        if located is None or not _same_process(*located):
            return False
        self._children[handle.name] = _Child(handle, *located, None)
        log.info("adopted replica %s pid=%d at %s", handle.name, located[0], handle.address)
        return True

    async def list(self) -> list[ReplicaHandle]:
        return [c.handle for c in self._children.values() if c.running]

    def describe(self, handle: ReplicaHandle) -> Description:
        located = _parse_locator(handle.locator)
        return {"pid": None if located is None else located[0]}

    async def release(self) -> None:
        self._children.clear()

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self._children)))

    async def _stop_adopted(self, child: _Child, force: bool) -> None:
        """Signal a process that is not our child, then poll until it is gone."""
        for sig, wait_s in (
            (signal.SIGKILL if force else signal.SIGTERM, self._stop_grace_s),
            (signal.SIGKILL, self._stop_grace_s),
        ):
            if not child.running:
                break
            with suppress(ProcessLookupError):
                os.kill(child.pid, sig)
            for _ in range(int(wait_s / _POLL_S)):  # not our child: no exit event to wait on
                if not child.running:
                    break
                await asyncio.sleep(_POLL_S)
        log.info("stopped adopted replica %s pid=%d", child.handle.name, child.pid)


def _stat(pid: int) -> list[str]:
    """Fields 3… of ``/proc/<pid>/stat`` (after the command name): [0] is the state, [19] the
    start time in clock ticks since boot. Raises OSError (FileNotFoundError: no such process)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()


def _start_time(pid: int) -> str:
    """The process start time, or "" where /proc is unavailable."""
    try:
        return _stat(pid)[19]
    except OSError:
        return ""


def _same_process(pid: int, start_time: str) -> bool:
    """True while ``pid`` runs, is not a zombie, and (if known) started at ``start_time``."""
    try:
        fields = _stat(pid)
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to "a process with this pid exists"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return not start_time or fields[19] == start_time


# -- configuration: the section and factory balancer.runtimes.registry names ------------------


@dataclass(frozen=True)
class ProcessSettings:
    """Replicas as local processes on loopback ports (the default)."""

    host: str = setting(
        "127.0.0.1", "replica_host", "loopback address replicas of the process runtime listen on"
    )
    env: str = setting(
        "",
        "replica_env",
        "comma list of environment variables the process runtime passes to its replicas besides "
        "PATH, HOME, the locale, TZ, TMPDIR and the PYTHON* search paths; never an LB_* setting "
        "(the balancer's secrets are among them)",
    )
    env_names: tuple[str, ...] = derived()

    def __post_init__(self) -> None:
        names = comma_list(self.env)
        check(env_name_checks("replica_env", names))
        object.__setattr__(self, "env_names", names)


def process_runtime(settings: ProcessSettings) -> ProcessRuntime:
    """The registry's factory: a ``ProcessRuntime`` as ``settings`` configure it."""
    return ProcessRuntime(settings.host, pass_env=settings.env_names)

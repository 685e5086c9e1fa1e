"""``lb-cluster`` (behind ``make run``): Redis plus N balancer instances sharing it, on one host.

Owns the development launcher. It picks a Redis (the URL it is given, else a throwaway
``redis-server`` on a free loopback port, else an in-process fakeredis stand-in), starts the
instances one at a time (the first normally wins the leader election and boots the replicas),
then supervises them: one that dies is reported and the others keep running. On SIGINT, SIGTERM
or SIGHUP it stops the followers first and the leader last (the last instance out stops the
replicas), one at a time, then Redis. Every child runs in its own process group, so a terminal's
Ctrl-C reaches only this launcher, which does the ordering.

Standard library only; fakeredis (and the redis client it pulls in) is imported lazily, for the
fallback alone. Must not import at module level: aiohttp, redis, fakeredis, or project modules.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any, NamedTuple, TypeVar

log = logging.getLogger("balancer.cluster")  # also when run as __main__

T = TypeVar("T")

DEFAULT_INSTANCES = 2
DEFAULT_BASE_PORT = 5555
DEFAULT_HOST = "127.0.0.1"
REDIS_URL_ENV = "LB_REDIS_URL"
# Set per instance by the launcher, so refused in the pass-through arguments.
OWN_FLAGS = ("--host", "--port", "--redis-url", "--instance-id")

REDIS_START_TIMEOUT_S = 10.0
INSTANCE_START_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0
PROBE_TIMEOUT_S = 1.0
POLL_S = 0.1


class LauncherError(Exception):
    """The cluster cannot start; the message says why and what to do."""


# -- arguments ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    instances: int = DEFAULT_INSTANCES
    base_port: int = DEFAULT_BASE_PORT
    host: str = DEFAULT_HOST
    redis_url: str | None = None
    passthrough: tuple[str, ...] = ()

    def port(self, index: int) -> int:
        return self.base_port + index


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lb-cluster",
        description="Run Redis plus N balancer instances sharing it (development launcher). "
        "Arguments after a literal -- go to every instance unchanged.",
        usage="%(prog)s [options] [-- balancer arguments...]",
    )
    parser.add_argument(
        "--instances", type=int, default=DEFAULT_INSTANCES, metavar="N", help="default 2"
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        metavar="PORT",
        help="instance i (from 0) listens on base-port + i; default 5555",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, metavar="ADDR", help="listen address; default 127.0.0.1"
    )
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        help=f"an existing Redis to share (default ${REDIS_URL_ENV}); without one, a "
        "redis-server is started, else an in-process fakeredis stand-in",
    )
    return parser


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The launcher's own arguments, and everything after the first literal ``--``."""
    args = list(argv)
    if "--" not in args:
        return args, []
    cut = args.index("--")
    return args[:cut], args[cut + 1 :]


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> Options:
    parser = build_parser()
    own, passthrough = split_passthrough(argv)
    ns = parser.parse_args(own)
    if ns.instances < 1:
        parser.error("--instances must be at least 1")
    if not 1 <= ns.base_port <= 65536 - ns.instances:
        parser.error(f"--base-port must leave room for {ns.instances} ports below 65536")
    for arg in passthrough:
        if any(arg == flag or arg.startswith(f"{flag}=") for flag in OWN_FLAGS):
            parser.error(
                f"{arg.split('=')[0]} is set per instance by lb-cluster; "
                "use --host, --base-port or --redis-url before the --"
            )
    return Options(
        instances=ns.instances,
        base_port=ns.base_port,
        host=ns.host,
        redis_url=ns.redis_url or env.get(REDIS_URL_ENV) or None,
        passthrough=tuple(passthrough),
    )


# -- addresses ---------------------------------------------------------------------------------


def connect_host(host: str) -> str:
    """Where to reach a server listening on ``host`` from this machine."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def http_url(host: str, port: int, path: str = "") -> str:
    target = connect_host(host)
    if ":" in target:
        target = f"[{target}]"
    return f"http://{target}:{port}{path}"


def redact(url: str) -> str:
    """``url`` with any password replaced, for logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens there (TIME_WAIT leftovers do not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def accepts_connections(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    try:
        with socket.create_connection((connect_host(host), port), timeout=timeout_s):
            return True
    except OSError:
        return False


def answers_ping(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """One inline ``PING`` over a raw socket: True on ``+PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# -- Redis -------------------------------------------------------------------------------------


class RedisEndpoint(NamedTuple):
    url: str
    origin: str  # "given", "redis-server" or "fakeredis"
    pid: int | None = None  # of the redis-server this launcher started


@contextlib.contextmanager
def redis_for(url: str | None, redis_server: str | None) -> Iterator[RedisEndpoint]:
    """The Redis the instances share, stopped (if started here) when the block exits.

    ``url`` given: used as is. Else ``redis_server`` (a binary path, normally
    ``shutil.which("redis-server")``) is started; ``None`` selects the fakeredis stand-in.
    """
    if url:
        log.info("redis: using %s", redact(url))
        yield RedisEndpoint(url, "given")
    elif redis_server is not None:
        with _redis_server(redis_server) as endpoint:
            yield endpoint
    else:
        with _fakeredis() as endpoint:
            yield endpoint


@contextlib.contextmanager
def _redis_server(binary: str) -> Iterator[RedisEndpoint]:
    workdir = tempfile.mkdtemp(prefix="lb-cluster-redis-")
    try:
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                *("--port", str(port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", workdir),
                *("--logfile", os.path.join(workdir, "redis.log")),
            ],
            stdin=subprocess.DEVNULL,
            process_group=0,  # a terminal's Ctrl-C must not stop it before the instances
        )
        try:
            _wait_for_redis(proc, port, os.path.join(workdir, "redis.log"))
            url = f"redis://127.0.0.1:{port}/0"
            log.info("redis: started redis-server (pid %d) at %s", proc.pid, url)
            yield RedisEndpoint(url, "redis-server", proc.pid)
        finally:
            stop_process(proc, "redis-server", grace_s=5.0)
            log.info("redis: redis-server stopped (exit code %s)", proc.returncode)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_redis(proc: subprocess.Popen[bytes], port: int, logfile: str) -> None:
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while not answers_ping("127.0.0.1", port, timeout_s=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            reason = (
                f"exited with code {proc.returncode}"
                if proc.returncode is not None
                else f"did not answer PING within {REDIS_START_TIMEOUT_S:.0f} s"
            )
            raise LauncherError(f"redis-server {reason}; its log ends:\n{_tail(logfile)}")
        time.sleep(POLL_S)


def _tail(path: str, lines: int = 10) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:]) or "(empty)"
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def _fakeredis() -> Iterator[RedisEndpoint]:
    server = _fakeredis_server()
    port = int(server.server_address[1])
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="fakeredis", daemon=True
    )
    thread.start()
    url = f"redis://127.0.0.1:{port}/0"
    log.warning(
        "redis: no %s and no redis-server on PATH, so using an in-process fakeredis stand-in at "
        "%s. It is for development only: slower, not real Redis, and its data lives in this "
        "launcher. Install redis-server or set %s for anything else.",
        REDIS_URL_ENV,
        url,
        REDIS_URL_ENV,
    )
    try:
        yield RedisEndpoint(url, "fakeredis")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2.0)


def _fakeredis_server() -> socketserver.ThreadingTCPServer:
    """A fakeredis ``TcpFakeServer`` bound to a free loopback port (not serving yet).

    fakeredis's TCP handler closes the connection after any error reply (seen with 2.40, see
    https://github.com/cunla/fakeredis-py/issues/432). redis-py's ``register_script`` relies on
    the ``NOSCRIPT`` error: it loads the script and retries on the same connection, so every
    Lua call would fail with "Connection closed by server". The handler below sends error
    replies as replies and keeps the connection, as Redis does.
    """
    if importlib.util.find_spec("fakeredis") is None:
        raise LauncherError(
            f"no Redis: set {REDIS_URL_ENV} (or --redis-url), put redis-server on PATH, "
            "or install the development stand-in with: pip install 'fakeredis[lua]'"
        )
    if importlib.util.find_spec("lupa") is None:
        raise LauncherError(
            "the fakeredis stand-in needs Lua (leader election and membership commits are "
            f"scripts): pip install 'fakeredis[lua]', or set {REDIS_URL_ENV}"
        )
    try:
        from fakeredis._clients._tcp_server import TCPFakeRequestHandler, TcpFakeServer
    except ImportError as exc:
        raise LauncherError(
            f"this fakeredis has no TCP server the launcher knows ({exc}); "
            f"pip install 'fakeredis[lua]>=2.40', or set {REDIS_URL_ENV}"
        ) from exc
    from redis.exceptions import ResponseError

    class KeepConnectionOnErrors(TCPFakeRequestHandler):
        def setup(self) -> None:
            super().setup()
            read = self.current_client.read_response

            def read_reply(**kwargs: Any) -> Any:
                try:
                    return read(**kwargs)
                except ResponseError as exc:
                    return exc  # encoded as an error reply by the handler's writer

            self.current_client.read_response = read_reply  # type: ignore[method-assign]

    server = TcpFakeServer(("127.0.0.1", 0))
    server.RequestHandlerClass = KeepConnectionOnErrors
    server.daemon_threads = True  # a client left connected must not keep the launcher alive
    return server


# -- signals -----------------------------------------------------------------------------------


class StopRequest:
    """Records SIGINT/SIGTERM/SIGHUP instead of dying on them, while in its ``with`` block."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        return "no signal" if self.signum is None else signal.Signals(self.signum).name

    def __enter__(self) -> StopRequest:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag: locks (logging, Event) in a signal handler can deadlock the main thread.
        self.signum = signum


# -- instances ---------------------------------------------------------------------------------


@dataclass
class Instance:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    exit_reported: bool = field(default=False)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None


def instance_argv(opts: Options, index: int) -> list[str]:
    """The command line of instance ``index``. The Redis URL is not on it (it may carry a
    password, and any local user can read /proc/<pid>/cmdline): ``start_instance`` passes it in
    the instance's environment."""
    return [
        sys.executable,
        *("-m", "balancer"),
        *("--host", opts.host),
        *("--port", str(opts.port(index))),
        *("--instance-id", instance_name(index)),
        *opts.passthrough,
    ]


def instance_name(index: int) -> str:
    return f"lb-{index + 1}"


def start_instance(argv: list[str], name: str, port: int, redis_url: str) -> Instance:
    # Own process group: Ctrl-C in the terminal reaches the launcher only, which orders the stop.
    env = {**os.environ, REDIS_URL_ENV: redis_url}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, process_group=0, env=env)
    log.info("%s: started (pid %d), waiting for port %d", name, proc.pid, port)
    return Instance(name, port, proc)


def wait_listening(
    instance: Instance,
    host: str,
    stop: StopRequest,
    timeout_s: float = INSTANCE_START_TIMEOUT_S,
) -> bool:
    """True once the instance accepts connections; False if a stop was requested first."""
    deadline = time.monotonic() + timeout_s
    while not accepts_connections(host, instance.port, timeout_s=0.5):
        if stop.requested:
            return False
        if not instance.running:
            raise LauncherError(
                f"{instance.name} {describe_exit(instance.proc.returncode)} before listening "
                f"on port {instance.port} (see its log above)"
            )
        if time.monotonic() > deadline:
            raise LauncherError(
                f"{instance.name} did not listen on port {instance.port} within {timeout_s:.0f} s"
            )
        time.sleep(POLL_S)
    return True


def query_is_leader(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """``"leader"`` of the instance's ``GET /lb/status``; False when absent or unanswered."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(http_url(host, port, "/lb/status"), timeout=timeout_s) as response:
            doc = json.loads(response.read(1 << 20))
    except (OSError, ValueError, http.client.HTTPException):
        return False
    return isinstance(doc, dict) and doc.get("leader") is True


def stop_order(items: Sequence[T], is_leader: Callable[[T], bool]) -> list[T]:
    """Followers first, newest first (so the first started, normally the leader, goes last
    even when no instance reports a role), then the leader(s)."""
    newest_first = list(reversed(items))
    return [i for i in newest_first if not is_leader(i)] + [i for i in newest_first if is_leader(i)]


def stop_process(proc: subprocess.Popen[bytes], name: str, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, up to ``grace_s`` to exit, then SIGKILL to its whole process group."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) still running after %.0f s; killing it", name, proc.pid, grace_s)
        _kill(proc)
        proc.wait()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        if os.getpgid(proc.pid) == proc.pid:  # its own group: its workers go with it
            os.killpg(proc.pid, signal.SIGKILL)
            return
    except (ProcessLookupError, PermissionError):
        pass
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def stop_instances(instances: Sequence[Instance], host: str) -> None:
    running = [i for i in instances if i.running]
    leaders = {i.name for i in running if query_is_leader(host, i.port)}
    for instance in stop_order(running, lambda i: i.name in leaders):
        role = "leader" if instance.name in leaders else "follower"
        log.info("%s: stopping (%s, pid %d)", instance.name, role, instance.proc.pid)
        stop_process(instance.proc, instance.name)
        log.info("%s: stopped (exit code %s)", instance.name, instance.proc.returncode)


def describe_exit(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def report_exits(instances: Sequence[Instance]) -> int:
    """Log each instance that has exited on its own (once); return how many still run."""
    for instance in instances:
        if not instance.running and not instance.exit_reported:
            instance.exit_reported = True
            log.warning(
                "%s (pid %d) %s; the others keep running",
                instance.name,
                instance.proc.pid,
                describe_exit(instance.proc.returncode),
            )
    return sum(1 for i in instances if i.running)


# -- the main loop -----------------------------------------------------------------------------


InstanceCommand = Callable[[Options, int], list[str]]


def run_cluster(
    opts: Options,
    redis: RedisEndpoint,
    stop: StopRequest,
    command: InstanceCommand = instance_argv,
) -> int:
    """Start, supervise and stop the instances; the exit code (0 after a signal)."""
    instances: list[Instance] = []
    try:
        if _start_all(opts, redis, command, instances, stop):
            print_summary(opts, redis, instances)
            while not stop.requested and report_exits(instances) > 0:
                time.sleep(POLL_S)
        if not stop.requested:
            log.error("all instances have exited")
            return 1
        log.info("%s: stopping the cluster", stop.signal_name)
        return 0
    finally:
        stop_instances(instances, opts.host)


def _start_all(
    opts: Options,
    redis: RedisEndpoint,
    command: InstanceCommand,
    instances: list[Instance],
    stop: StopRequest,
) -> bool:
    """Start the instances one at a time (each listening before the next starts), appending
    each to ``instances``; False if a stop was requested meanwhile."""
    for index in range(opts.instances):
        port = opts.port(index)
        instance = start_instance(command(opts, index), instance_name(index), port, redis.url)
        instances.append(instance)
        if not wait_listening(instance, opts.host, stop):
            return False
        log.info("%s: listening on %s", instance.name, http_url(opts.host, port))
    return True


def print_summary(opts: Options, redis: RedisEndpoint, instances: Sequence[Instance]) -> None:
    lines = [f"lb-cluster: {len(instances)} instance(s) up; Ctrl-C stops them, leader last"]
    lines += [f"  {i.name:<6} {http_url(opts.host, i.port)}  (pid {i.proc.pid})" for i in instances]
    origin = redis.origin if redis.pid is None else f"{redis.origin}, pid {redis.pid}"
    lines.append(f"  redis  {redact(redis.url)}  ({origin})")
    lines.append(f"  try    curl {http_url(opts.host, instances[0].port, '/lb/status')}")
    print("\n".join(lines), flush=True)


def check_ports_free(opts: Options) -> None:
    busy = [opts.port(i) for i in range(opts.instances) if port_in_use(opts.host, opts.port(i))]
    if busy:
        raise LauncherError(
            f"port(s) {', '.join(map(str, busy))} on {opts.host} already in use "
            "(another lb-cluster or lb-balancer?); stop it or pass --base-port"
        )


def main(argv: Sequence[str] | None = None) -> None:
    opts = parse_args(sys.argv[1:] if argv is None else argv, os.environ)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        # Signals are recorded from here on, so Redis is always stopped, after the instances.
        with StopRequest() as stop:
            check_ports_free(opts)
            with redis_for(opts.redis_url, shutil.which("redis-server")) as redis:
                code = run_cluster(opts, redis, stop)
    except LauncherError as exc:
        sys.exit(f"lb-cluster: {exc}")
    sys.exit(code)


if __name__ == "__main__":
    main()

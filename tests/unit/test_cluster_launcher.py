"""``balancer.cluster`` (the ``make run`` launcher) without real balancer instances.

Redis selection (a given URL, a real redis-server, the fakeredis stand-in and the redis-py
features the balancer needs from it), argument parsing, the stop order, process stopping, and
the whole start/supervise/stop loop over tiny fake instances (stdlib HTTP servers that answer
``/lb/status`` and log when they start, listen and stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from balancer import cluster
from balancer.cluster import (
    LauncherError,
    Options,
    RedisEndpoint,
    StopRequest,
    instance_argv,
    parse_args,
    query_is_leader,
    redis_for,
    run_cluster,
    stop_order,
    stop_process,
)
from tests.support.ports import free_port

# -- helpers -----------------------------------------------------------------------------------


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def free_port_block(count: int) -> int:
    """A base port with ``count`` consecutive free ports from it."""
    for _ in range(50):
        base = free_port()
        if base + count <= 65535 and all_bindable(base, count):
            return base
    pytest.fail(f"no {count} consecutive free ports")


def all_bindable(base: int, count: int) -> bool:
    with contextlib.ExitStack() as stack:
        for port in range(base, base + count):
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def wait_until(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- arguments ---------------------------------------------------------------------------------


def test_defaults_take_the_redis_url_from_the_environment() -> None:
    assert parse_args([], {}) == Options(2, 5555, "127.0.0.1", None, ())
    assert parse_args([], {"LB_REDIS_URL": "redis://r:6379/1"}).redis_url == "redis://r:6379/1"
    assert parse_args([], {"LB_REDIS_URL": ""}).redis_url is None


def test_flags_override_the_environment() -> None:
    opts = parse_args(
        [
            "--instances",
            "3",
            "--base-port",
            "7000",
            "--host",
            "0.0.0.0",
            "--redis-url",
            "redis://a",
        ],
        {"LB_REDIS_URL": "redis://b"},
    )
    assert opts == Options(3, 7000, "0.0.0.0", "redis://a", ())


def test_everything_after_the_first_double_dash_passes_through_unparsed() -> None:
    opts = parse_args(
        ["--instances", "3", "--", "--replicas", "5", "--instances", "9", "--", "x"], {}
    )
    assert opts.instances == 3
    assert opts.passthrough == ("--replicas", "5", "--instances", "9", "--", "x")


@pytest.mark.parametrize("flag", ["--port", "--port=6000", "--redis-url", "--instance-id=x"])
def test_flags_set_per_instance_are_refused_in_the_passthrough(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--", flag, "1"], {})
    assert flag.split("=")[0] in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--instances", "0"], ["--base-port", "65535"]])
def test_impossible_layouts_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv, {})


def test_instance_command_line() -> None:
    opts = Options(base_port=6000, passthrough=("--replicas", "5"))
    assert instance_argv(opts, 1) == [
        sys.executable,
        *("-m", "balancer", "--host", "127.0.0.1", "--port", "6001"),
        *("--instance-id", "lb-2"),
        *("--replicas", "5"),
    ]  # no Redis URL: it may hold a password, and /proc/<pid>/cmdline is world-readable


def test_addresses_and_redaction() -> None:
    assert cluster.http_url("0.0.0.0", 5555, "/lb/status") == "http://127.0.0.1:5555/lb/status"
    assert cluster.http_url("::", 5555) == "http://[::1]:5555"
    assert cluster.redact("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert cluster.redact("redis://u:pw@h/0") == "redis://u:***@h/0"
    assert cluster.redact("redis://h:6379/0") == "redis://h:6379/0"


def test_a_busy_port_is_reported_before_anything_starts() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(LauncherError, match=str(port)):
            cluster.check_ports_free(Options(instances=1, base_port=port))
    cluster.check_ports_free(Options(instances=1, base_port=port))  # free again: no error


# -- Redis selection ---------------------------------------------------------------------------


def test_a_given_url_is_used_untouched() -> None:
    url = "redis://:pw@redis.example:6380/3"
    # A binary that cannot run proves nothing is started.
    with redis_for(url, "/nonexistent/redis-server") as endpoint:
        assert endpoint == RedisEndpoint(url, "given", None)


@pytest.fixture
def redis_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the launcher's redis-server work directories go during the test."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_a_started_redis_server_answers_and_is_gone_after_stop(redis_tmp: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH")
    with redis_for(None, binary) as endpoint:
        assert endpoint.origin == "redis-server"
        assert endpoint.pid is not None
        client = redis.Redis.from_url(endpoint.url, socket_timeout=2)
        try:
            assert client.ping() is True
            assert client.config_get("save") == {"save": ""}
        finally:
            client.close()
        assert len(list(redis_tmp.glob("lb-cluster-redis-*"))) == 1
    assert refuses(port_of(endpoint.url))
    with pytest.raises(ProcessLookupError):
        os.kill(endpoint.pid, 0)
    assert list(redis_tmp.glob("lb-cluster-redis-*")) == []


def test_a_redis_server_that_cannot_start_fails_fast_and_cleans_up(redis_tmp: Path) -> None:
    binary = shutil.which("false")
    if binary is None:
        pytest.skip("no `false` binary")
    started = time.monotonic()
    with pytest.raises(LauncherError, match="exited with code 1"), redis_for(None, binary):
        pass
    assert time.monotonic() - started < 3
    assert list(redis_tmp.glob("lb-cluster-redis-*")) == []


_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[3], 'epoch', token, 'doc', ARGV[1])
  redis.call('PUBLISH', KEYS[4], token)
  return token
end
return 0
"""


async def test_the_fakeredis_stand_in_serves_what_the_balancer_uses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="balancer.cluster")
    with redis_for(None, None) as endpoint:
        assert endpoint.origin == "fakeredis"
        warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert "development only" in warning
        assert "LB_REDIS_URL" in warning
        assert "redis-server" in warning
        client = aioredis.Redis.from_url(endpoint.url, socket_timeout=3)
        listener = aioredis.Redis.from_url(endpoint.url, socket_timeout=3)
        try:
            await _check_features(client, listener)
        finally:
            await client.aclose()
            await listener.aclose()
    assert refuses(port_of(endpoint.url))


async def _check_features(client: aioredis.Redis, listener: aioredis.Redis) -> None:
    assert await client.ping() is True
    async with listener.pubsub() as pubsub:
        await pubsub.subscribe("changes")
        # register_script: EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA again on the same connection.
        acquire = client.register_script(_ACQUIRE)
        keys = ["lease", "fence", "membership", "changes"]
        assert await acquire(keys=keys, args=["lb-1", 5000]) == 1
        assert await acquire(keys=keys, args=["lb-2", 5000]) == 0  # NX: the lease is taken
        assert 0 < await client.pttl("lease") <= 5000  # PX
        assert await next_message(pubsub) == b"1"
    assert await client.set("lock", "a", nx=True, px=200) is True
    assert await client.set("lock", "b", nx=True, px=200) is None
    assert await client.hmget("membership", ["epoch", "doc"]) == [b"1", b"lb-1"]
    await client.hset("h", mapping={"a": "1"})
    assert await client.hmget("h", ["a", "missing"]) == [b"1", None]
    for name in ("r1", "r2", "r3"):
        await client.set(f"lb:alive:{name}", 1, px=10_000)
    found = {key async for key in client.scan_iter(match="lb:alive:*", count=1)}
    assert found == {b"lb:alive:r1", b"lb:alive:r2", b"lb:alive:r3"}
    started = time.monotonic()
    assert await client.blpop(["queue"], timeout=1) is None
    assert 0.9 <= time.monotonic() - started < 2.5
    # An error reply leaves the connection usable (fakeredis's own TCP server closes it).
    await client.set("plain", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        await client.lpush("plain", "x")
    assert await client.ping() is True


async def next_message(pubsub: PubSub, timeout_s: float = 2.0) -> bytes | None:
    """The next published message's data (subscribe confirmations skipped), or None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            return bytes(message["data"])
    return None


async def test_blpop_wakes_on_a_push_from_another_client() -> None:
    with redis_for(None, None) as endpoint:
        waiter = aioredis.Redis.from_url(endpoint.url, socket_timeout=3)
        pusher = aioredis.Redis.from_url(endpoint.url, socket_timeout=3)
        try:
            blpop = asyncio.ensure_future(waiter.blpop(["jobs"], timeout=2))
            await asyncio.sleep(0.1)
            await pusher.rpush("jobs", "job-1")
            assert await asyncio.wait_for(blpop, 1.5) == (b"jobs", b"job-1")
        finally:
            await waiter.aclose()
            await pusher.aclose()


# -- leader query and stop order ---------------------------------------------------------------


@pytest.fixture
def status_server() -> Iterator[Callable[[int, bytes], int]]:
    """Serve one fixed answer at ``GET /lb/status`` (404 elsewhere); returns the port."""
    servers: list[ThreadingHTTPServer] = []

    def serve(status: int, body: bytes) -> int:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = status if self.path == "/lb/status" else 404
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return int(server.server_address[1])

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "body", "leader"),
    [
        (200, b'{"leader": true, "epoch": 3}', True),
        (200, b'{"leader": false}', False),
        (200, b'{"epoch": 3}', False),  # no field yet: a follower
        (200, b'{"leader": "yes"}', False),
        (200, b"<html>", False),
        (200, b"[true]", False),
        (500, b'{"leader": true}', False),
    ],
)
def test_the_leader_is_read_from_lb_status(
    status_server: Callable[[int, bytes], int], status: int, body: bytes, leader: bool
) -> None:
    assert query_is_leader("127.0.0.1", status_server(status, body)) is leader


def test_an_instance_that_does_not_answer_is_a_follower_without_waiting_long() -> None:
    assert query_is_leader("127.0.0.1", free_port()) is False  # refused
    with socket.socket() as silent:  # accepts (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        assert query_is_leader("127.0.0.1", silent.getsockname()[1], timeout_s=0.3) is False
        assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("leaders", "order"),
    [
        ({"lb-2"}, ["lb-3", "lb-1", "lb-2"]),
        ({"lb-1"}, ["lb-3", "lb-2", "lb-1"]),
        ({"lb-3"}, ["lb-2", "lb-1", "lb-3"]),
        (set(), ["lb-3", "lb-2", "lb-1"]),  # no roles reported: the first started goes last
    ],
)
def test_followers_stop_first_and_the_leader_last(leaders: set[str], order: list[str]) -> None:
    assert stop_order(["lb-1", "lb-2", "lb-3"], lambda name: name in leaders) == order


# -- stopping processes ------------------------------------------------------------------------


def _child(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, process_group=0)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.stdout.close()
    return proc


def test_a_process_that_honours_sigterm_is_not_killed() -> None:
    proc = _child("import time; print('ready', flush=True); time.sleep(30)")
    started = time.monotonic()
    stop_process(proc, "child", grace_s=5.0)
    assert proc.returncode == -signal.SIGTERM
    assert time.monotonic() - started < 2


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    proc = _child(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(30)"
    )
    started = time.monotonic()
    stop_process(proc, "child", grace_s=0.3)
    assert proc.returncode == -signal.SIGKILL
    assert 0.3 <= time.monotonic() - started < 3


def test_stop_request_records_signals_and_restores_the_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert wait_until(lambda: stop.requested, 2.0)
        assert stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


# -- the whole loop over fake instances --------------------------------------------------------

# Logs "start", "listen" (after a pause, so a launcher that does not wait would interleave) and
# "stop" (on SIGTERM) to $FAKE_EVENTS; answers /lb/status with leader = (id == $FAKE_LEADER),
# lb-1 without the field at all; GET /die exits with code 7.
FAKE_INSTANCE = r"""
import json, os, signal, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
name = args[args.index("--instance-id") + 1]

def event(what):
    with open(os.environ["FAKE_EVENTS"], "a") as f:
        f.write(f"{what} {name}\n")

def on_term(signum, frame):
    event("stop")
    os._exit(0)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/die":
            os._exit(7)
        leader = name == os.environ.get("FAKE_LEADER")
        doc = {} if name == "lb-1" and not leader else {"leader": leader}
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

signal.signal(signal.SIGTERM, on_term)
event("start")
time.sleep(0.2)
server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
event("listen")
server.serve_forever()
"""


def fake_instance(opts: Options, index: int) -> list[str]:
    return [sys.executable, "-c", FAKE_INSTANCE, *instance_argv(opts, index)[3:]]


@pytest.fixture
def events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    path = tmp_path / "events"
    path.touch()
    monkeypatch.setenv("FAKE_EVENTS", str(path))
    return lambda: path.read_text().splitlines()


def run_in_background(action: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def get(port: int, path: str) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            sock.recv(1024)
    except OSError:
        pass


ENDPOINT = RedisEndpoint("redis://127.0.0.1:1/0", "given")


def test_instances_start_one_by_one_and_stop_followers_first_leader_last(
    events: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FAKE_LEADER", "lb-2")
    opts = Options(instances=3, base_port=free_port_block(3))
    stop = StopRequest()

    def stop_once_up() -> None:
        if wait_until(lambda: events().count("listen lb-3") == 1):
            stop.signum = signal.SIGTERM

    waiter = run_in_background(stop_once_up)
    assert run_cluster(opts, ENDPOINT, stop, command=fake_instance) == 0
    waiter.join()
    assert events() == [
        *("start lb-1", "listen lb-1", "start lb-2", "listen lb-2", "start lb-3", "listen lb-3"),
        *("stop lb-3", "stop lb-1", "stop lb-2"),
    ]
    out = capsys.readouterr().out
    for i in range(3):
        assert f"lb-{i + 1}" in out
        assert f"http://127.0.0.1:{opts.base_port + i}" in out
    assert f"curl http://127.0.0.1:{opts.base_port}/lb/status" in out
    assert "redis://127.0.0.1:1/0" in out


def test_an_instance_that_dies_is_reported_and_the_others_keep_running(
    events: Callable[[], list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="balancer.cluster")
    opts = Options(instances=2, base_port=free_port_block(2))
    stop = StopRequest()
    seen: dict[str, bool] = {}

    def kill_lb2_then_stop() -> None:
        if not wait_until(lambda: "lb-2: listening" in caplog.text):
            return
        get(opts.base_port + 1, "/die")
        seen["reported"] = wait_until(lambda: "lb-2 (pid" in caplog.text, 3.0)
        seen["lb-1 up"] = not refuses(opts.base_port)
        stop.signum = signal.SIGINT

    waiter = run_in_background(kill_lb2_then_stop)
    assert run_cluster(opts, ENDPOINT, stop, command=fake_instance) == 0
    waiter.join()
    assert seen == {"reported": True, "lb-1 up": True}
    assert "exited with code 7" in caplog.text
    assert events()[-1:] == ["stop lb-1"]
    assert "stop lb-2" not in events()


def test_the_launcher_ends_with_an_error_when_every_instance_has_exited(
    events: Callable[[], list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="balancer.cluster")
    opts = Options(instances=2, base_port=free_port_block(2))

    def kill_both() -> None:
        if wait_until(lambda: "lb-2: listening" in caplog.text):
            get(opts.base_port, "/die")
            get(opts.base_port + 1, "/die")

    waiter = run_in_background(kill_both)
    assert run_cluster(opts, ENDPOINT, StopRequest(), command=fake_instance) == 1
    waiter.join()


def test_an_instance_that_exits_while_starting_fails_fast_and_stops_the_others(
    events: Callable[[], list[str]],
) -> None:
    opts = Options(instances=3, base_port=free_port_block(3))

    def command(opts: Options, index: int) -> list[str]:
        if index == 1:
            return [sys.executable, "-c", "raise SystemExit(3)"]
        return fake_instance(opts, index)

    started = time.monotonic()
    with pytest.raises(LauncherError, match="lb-2 exited with code 3 before listening"):
        run_cluster(opts, ENDPOINT, StopRequest(), command=command)
    assert time.monotonic() - started < 4
    assert events() == ["start lb-1", "listen lb-1", "stop lb-1"]  # lb-3 never started


def test_a_stop_while_an_instance_is_starting_stops_it_and_exits_cleanly() -> None:
    opts = Options(instances=2, base_port=free_port_block(2))
    stop = StopRequest()
    procs: list[subprocess.Popen[bytes]] = []
    real_start = cluster.start_instance

    def never_listens(opts: Options, index: int) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(30)"]

    def start_and_keep(argv: list[str], name: str, port: int, redis_url: str) -> cluster.Instance:
        instance = real_start(argv, name, port, redis_url)
        procs.append(instance.proc)
        return instance

    def stop_soon() -> None:
        time.sleep(0.3)
        stop.signum = signal.SIGTERM

    waiter = run_in_background(stop_soon)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cluster, "start_instance", start_and_keep)
        assert run_cluster(opts, ENDPOINT, stop, command=never_listens) == 0
    waiter.join()
    assert len(procs) == 1  # the second instance was never started
    assert procs[0].returncode == -signal.SIGTERM


def test_the_redis_url_reaches_an_instance_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    script = "import os, sys; open(sys.argv[1], 'w').write(os.environ['LB_REDIS_URL'])"
    instance = cluster.start_instance(
        [sys.executable, "-c", script, str(out)], "lb-1", 1, "redis://:s3cret@h:6379/0"
    )
    assert instance.proc.wait(timeout=10) == 0
    assert out.read_text() == "redis://:s3cret@h:6379/0"

"""SIGKILL of a replica under wrk load: how many requests fail, at several concurrencies.

For each connection count: starts one balancer (``python -m balancer``, process runtime, 3
replicas on loopback), runs ``wrk`` (keep-alive, no pause: the hardest case for requests in
flight on the killed replica) against it, SIGKILLs one replica (a pid the balancer reports for a
replica it started) a third of the way in, and prints wrk's count of non-2xx answers and socket
errors. Traffic goes to 127.0.0.1 only; each run is bounded by ``--duration``; every process is
stopped by its PID.

    .venv/bin/python bench/kill_under_load.py                      # 16, 64, 256 connections
    .venv/bin/python bench/kill_under_load.py --repo /tmp/base     # an older checkout's balancer
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

LUA = Path(__file__).with_name("paced.lua")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/lb/status", timeout=2) as resp:
        return dict(json.load(resp))


def _wait_ready(port: int, timeout_s: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = _status(port)
            replicas = status.get("replicas")
            if isinstance(replicas, list) and len(replicas) == 3:
                return status
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("balancer not ready")


def run_once(repo: Path, connections: int, duration_s: int) -> tuple[int, int, int]:
    """(requests, non-2xx, socket errors) of one wrk run with one replica killed."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    lb = subprocess.Popen(
        [sys.executable, "-m", "balancer", "--port", str(port), "--replicas", "3",
         "--log-level", "WARNING"],
        cwd=repo, env={**env, "PYTHONPATH": str(repo)}, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        status = _wait_ready(port)
        replicas = status["replicas"]
        assert isinstance(replicas, list)
        victim = replicas[1]
        wrk = subprocess.Popen(
            ["wrk", "-t2", f"-c{connections}", f"-d{duration_s}s", "-s", str(LUA),
             f"http://127.0.0.1:{port}", "--", "0"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(duration_s / 3)
        os.kill(int(victim["pid"]), signal.SIGKILL)  # a replica this balancer started
        out, _ = wrk.communicate(timeout=duration_s + 30)
    finally:
        lb.send_signal(signal.SIGTERM)
        try:
            lb.wait(timeout=15)
        except subprocess.TimeoutExpired:
            lb.kill()
            lb.wait()
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(map(int, errors.groups())) if errors else 0
    return total, int(non2xx.group(1)) if non2xx else 0, socket_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--connections", default="16,64,256")
    parser.add_argument("--duration", type=int, default=6)
    args = parser.parse_args()
    for c in map(int, args.connections.split(",")):
        total, bad, errors = run_once(args.repo.resolve(), c, args.duration)
        print(f"{c:>4} connections: {total} requests, {bad} non-2xx, {errors} socket errors")


if __name__ == "__main__":
    main()

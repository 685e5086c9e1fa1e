"""The analysis commands A-1..A-4 and the load driver, end to end against the real thing:
``python -m balancer --replicas 3`` as a subprocess (replicas are local processes), at reduced
size (2,000 requests per batch instead of 10,000)."""

from __future__ import annotations

import collections
import contextlib
import csv
import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadgen import a1, a2, a3, a4
from loadgen.driver import DriveConfig, drive
from loadgen.keys import parse_keys
from loadgen.stats import summarize
from tests.support.balancer_process import BalancerProcess
from tests.support.cluster import cmdline, pid_alive

pytestmark = pytest.mark.slow

REQUESTS = 2_000
ROOT = Path(__file__).resolve().parents[2]


class Deployment(BalancerProcess):
    """``python -m balancer --port <free> --replicas 3``, started and stopped by PID; every
    replica pid it ever listed is remembered, so none outlives the test module."""

    def __init__(self, log_path: Path) -> None:
        super().__init__(log_path, "--replicas", "3")
        self.replica_pids: set[int] = set()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return json.load(resp)

    def send(self, method: str, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)

    def names(self) -> list[str]:
        return list(self.get("/rep")["message"]["replicas"])

    def algorithm(self) -> str:
        return str(self.get("/lb/settings")["message"]["settings"]["algorithm"])

    def remember_pids(self) -> None:
        for replica in self.get("/lb/status")["replicas"]:
            if replica.get("pid"):
                self.replica_pids.add(replica["pid"])

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        self.wait_listening(timeout_s)
        deadline = time.monotonic() + timeout_s
        while len(self.names()) != 3:
            assert time.monotonic() < deadline, "the balancer did not reach N=3"
            time.sleep(0.05)
        self.remember_pids()

    def stop(self) -> None:
        super().stop()  # SIGINT: the balancer stops its replicas
        for pid in self.replica_pids:  # only if the balancer could not stop them
            if pid_alive(pid) and " -m server" in cmdline(pid):  # still ours, not a reused pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = Deployment(tmp_path_factory.mktemp("lb") / "balancer.log")
    try:
        dep.wait_ready()
        yield dep
    finally:
        dep.stop()


@pytest.fixture
def lb(deployment: Deployment) -> Iterator[Deployment]:
    """The shared deployment at N=3 with its original replicas and algorithm, before and after."""
    names, algorithm = deployment.names(), deployment.algorithm()
    assert len(names) == 3 and algorithm == "slots"
    yield deployment
    deployment.remember_pids()
    assert deployment.algorithm() == algorithm


def png_size(path: Path) -> tuple[int, int]:
    """A valid, non-trivial PNG: signature, IHDR, more than 10 KB; its width and height."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert len(data) > 10_000, f"{path}: only {len(data)} bytes"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height >= 400, (width, height)
    return width, height


def counted_once(run: dict[str, Any], requests: int = REQUESTS) -> None:
    assert run["requests"] == requests
    assert run["ok"] + run["failed"] == requests
    assert sum(run["per_replica"].values()) == run["ok"]
    assert sum(run["failures"].values()) == run["failed"] == 0
    assert len(run["per_replica"]) == run["N"]
    assert run["mean"] == pytest.approx(requests / run["N"])


async def test_a1_counts_every_request_once(lb: Deployment, tmp_path: Path) -> None:
    before = lb.names()
    result = await a1.run_a1(lb.url, REQUESTS)
    paths = a1.write_a1(result, tmp_path)
    assert [p.name for p in paths] == ["a1.png", "a1.json", "a1.csv"]
    png_size(tmp_path / "a1.png")
    data = json.loads((tmp_path / "a1.json").read_text())
    counted_once(data)
    assert data["N"] == 3 and set(data["per_replica"]) == set(before)
    assert data["peak_to_mean"] < 1.3
    with (tmp_path / "a1.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sum(int(r["requests"]) for r in rows) == REQUESTS
    assert lb.names() == before and data["restored_N"] == data["original_N"] == 3


async def test_a1_scales_to_3_first_and_puts_the_original_replicas_back(
    lb: Deployment,
) -> None:
    original = lb.names()
    at_four = lb.send("POST", "/add", {"n": 1, "hostnames": ["LG4"]})["message"]["replicas"]
    try:
        result = await a1.run_a1(lb.url, 500)
        assert result.run.n == 3 and result.run.ok == 500
        assert sorted(lb.names()) == sorted(at_four) == sorted(result.restored)
    finally:
        lb.send("DELETE", "/rm", {"n": 1, "hostnames": ["LG4"]})
    assert sorted(lb.names()) == sorted(original)


async def test_a2_sweeps_n_2_to_6_and_restores(lb: Deployment, tmp_path: Path) -> None:
    original = lb.names()
    result = await a2.run_a2(lb.url, REQUESTS)
    a2.write_a2(result, tmp_path)
    png_size(tmp_path / "a2.png")
    data = json.loads((tmp_path / "a2.json").read_text())
    assert [run["N"] for run in data["runs"]] == [2, 3, 4, 5, 6]
    for run in data["runs"]:
        counted_once(run)
        assert run["min"] <= run["mean"] <= run["max"] and run["stdev"] >= 0
    with (tmp_path / "a2.csv").open() as f:
        assert [int(r["N"]) for r in csv.DictReader(f)] == [2, 3, 4, 5, 6]
    assert data["restored_N"] == data["original_N"] == 3
    assert sorted(lb.names()) == sorted(original)  # by name, not only N


async def test_a3_checks_every_endpoint_and_times_the_recovery(
    lb: Deployment, tmp_path: Path
) -> None:
    result = await a3.run_a3(lb.url)
    a3.write_a3(result, tmp_path)
    data = json.loads((tmp_path / "a3.json").read_text())
    failed = [c for c in data["checks"] if not c["passed"]]
    assert not failed and data["all_passed"] and data["error"] is None
    assert len(data["checks"]) >= 14
    kill = data["kill"]
    assert kill["how"].startswith("os.kill(") and kill["target_N"] == 3
    assert 0 < kill["victim_gone_s"] <= kill["recovery_s"] < 10.0
    assert len(kill["replacement"]) == 1 and kill["victim"] not in lb.names()
    timeline = kill["timeline"]
    assert timeline[0]["t"] < 0 < timeline[-1]["t"]
    assert all(abs(s["t"]) < 60 for s in timeline)
    assert timeline[-1]["n"] == 3 and not timeline[-1]["victim_listed"]
    png_size(tmp_path / "a3.png")
    assert len(lb.names()) == 3


async def test_a4_compares_and_restores_the_algorithm(lb: Deployment, tmp_path: Path) -> None:
    original = lb.names()
    result = await a4.run_a4(lb.url, REQUESTS)
    paths = a4.write_a4(result, tmp_path)
    assert {p.name for p in paths} == {"a4_a1.png", "a4_a2.png", "a4.json", "a4.csv"}
    png_size(tmp_path / "a4_a1.png")
    png_size(tmp_path / "a4_a2.png")
    data = json.loads((tmp_path / "a4.json").read_text())
    assert list(data["algorithms"]) == ["assignment", "slots"]
    for runs in data["algorithms"].values():
        counted_once(runs["a1"])
        assert runs["a1"]["N"] == 3
        assert [run["N"] for run in runs["a2"]] == [2, 3, 4, 5, 6]
        for run in runs["a2"]:
            counted_once(run)
    # The literal scheme's known skew (one replica gets most of the traffic) against the default.
    assert data["algorithms"]["assignment"]["a1"]["peak_to_mean"] > 1.5
    assert data["algorithms"]["slots"]["a1"]["peak_to_mean"] < 1.3
    assert data["restored_algorithm"] == data["original_algorithm"] == lb.algorithm() == "slots"
    assert sorted(lb.names()) == sorted(original)
    with (tmp_path / "a4.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2 * (1 + 5)


async def test_driver_open_loop_rate_and_keys(lb: Deployment) -> None:
    config = DriveConfig(
        target=f"{lb.url}/home",
        count=300,
        rate=500.0,
        concurrency=20,
        keys=parse_keys("uniform:8"),
        seed=1,
    )
    result = await drive(config)
    summary = summarize(result.records, result.seconds, result.max_lag_s)
    assert summary.requests == summary.ok == 300 and not summary.failures
    assert 0.55 <= result.seconds < 5.0  # 300 sends at 500/s take 0.6 s
    starts = sorted(r.t_start for r in result.records)
    assert starts[-1] == pytest.approx(299 / 500, abs=0.1)
    owner: dict[str, set[str]] = collections.defaultdict(set)
    for r in result.records:
        assert r.key is not None and r.replica is not None
        owner[r.key].add(r.replica)
    assert len(owner) <= 8 and all(len(v) == 1 for v in owner.values())  # a key sticks


def loadgen(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadgen", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def test_cli_run_writes_one_csv_row_per_request(lb: Deployment, tmp_path: Path) -> None:
    out = loadgen(
        "-n", "400", "-c", "10", "--url", f"{lb.url}/home", "--csv", str(tmp_path / "r.csv")
    )
    assert out.returncode == 0, out.stderr
    assert "requests 400   ok 400   failed 0" in out.stdout and "p99" in out.stdout
    assert "\r" not in out.stdout  # no progress bar when stdout is not a terminal
    with (tmp_path / "r.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 400 and {r["status"] for r in rows} == {"200"}
    assert {r["replica"] for r in rows} == {n.removeprefix("Server ") for n in lb.names()}


def test_cli_a3_with_a_kill_command_and_a1(lb: Deployment, tmp_path: Path) -> None:
    out = loadgen("a3", "--url", lb.url, "--out", str(tmp_path), "--kill-cmd", "kill -9 {pid}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAIL" not in out.stdout and "kill -9 " in out.stdout
    data = json.loads((tmp_path / "a3.json").read_text())
    assert data["all_passed"] and data["kill"]["recovery_s"] < 10.0
    lb.remember_pids()
    out = loadgen("a1", "--url", lb.url, "--out", str(tmp_path), "-n", "300")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| replica" in out.stdout and "a1.png" in out.stdout
    png_size(tmp_path / "a1.png")


def test_cli_a3_reports_a_kill_it_cannot_do(lb: Deployment, tmp_path: Path) -> None:
    out = loadgen("a3", "--url", lb.url, "--out", str(tmp_path), "--victim", "NoSuchReplica")
    assert out.returncode == 1
    assert "kill not done" in out.stdout and "NoSuchReplica" in out.stdout

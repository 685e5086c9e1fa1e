"""The pure parts of loadgen: percentiles, load statistics, key distributions, CSV rows, the
contract helpers, the kill command template and the command line."""

from __future__ import annotations

import collections
import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadgen.__main__ import normalize_argv, parser, target_url
from loadgen.admin import base_url
from loadgen.contract import (
    name_for_id,
    natural_key,
    replica_from_body,
    replica_id,
    replicas_shape_error,
    unknown_path_error,
)
from loadgen.driver import DriveConfig
from loadgen.keys import ID_HIGH, ID_LOW, KeyDrawer, KeySpec, parse_keys
from loadgen.kill import KillError, is_loopback, kill_replica, render_command
from loadgen.output import table
from loadgen.records import CSV_FIELDS, RequestRecord, csv_row, write_csv
from loadgen.stats import LoadStats, percentile, summarize

# --- percentiles and load statistics -------------------------------------------------------


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 99.9, 100])
@pytest.mark.parametrize("values", [[5.0], [3.0, 1.0], [0.1, 0.5, 0.2, 9.0, 3.3], list(range(101))])
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_known_values_and_edges() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_load_stats_counts_zero_replicas_and_uses_population_stdev() -> None:
    stats = LoadStats.of([8000, 1500, 500, 0])
    assert (stats.n, stats.total, stats.mean, stats.min, stats.max) == (4, 10_000, 2500, 0, 8000)
    assert stats.stdev == pytest.approx(float(np.std([8000, 1500, 500, 0])))
    assert stats.peak_to_mean == pytest.approx(3.2)
    assert LoadStats.of([]).peak_to_mean == 0.0


def rec(t: float, lat: float, status: int | None, replica: str | None, error: str | None = None):
    return RequestRecord(t, lat, status, replica, None, error)


def test_summarize_counts_every_request_once() -> None:
    records = [
        rec(0.0, 0.010, 200, "1"),
        rec(0.1, 0.020, 200, "2"),
        rec(0.2, 0.030, 200, "1"),
        rec(0.3, 0.500, 502, None, "HTTP 502"),
        rec(0.4, 10.0, None, None, "TimeoutError"),
        rec(0.5, 0.040, 200, None),  # a 2xx with no replica id (e.g. /heartbeat)
    ]
    s = summarize(records, seconds=2.0)
    assert (s.requests, s.ok) == (6, 4)
    assert s.failures == {"HTTP 502": 1, "TimeoutError": 1}
    assert s.per_replica == {"1": 2, "2": 1, "(unknown)": 1}
    assert s.ok + sum(s.failures.values()) == s.requests
    assert s.p50_s == pytest.approx(0.025)  # over the ok requests only
    assert s.rate == 3.0


# --- key distributions ---------------------------------------------------------------------


def test_parse_keys() -> None:
    assert parse_keys("none") == KeySpec()
    assert parse_keys("uniform:50") == KeySpec("uniform", 50)
    assert parse_keys("Zipf:1000:1.1") == KeySpec("zipf", 1000, 1.1)
    assert str(parse_keys("zipf:1000:1.1")) == "zipf:1000:1.1"


@pytest.mark.parametrize(
    "bad", ["", "random", "uniform", "uniform:0", "uniform:x", "zipf:10", "zipf:10:-1", "none:3"]
)
def test_parse_keys_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_keys(bad)


def test_no_key() -> None:
    assert {KeyDrawer(KeySpec()).next() for _ in range(10)} == {None}


def test_uniform_draws_k_distinct_six_digit_ids_evenly() -> None:
    drawer = KeyDrawer(parse_keys("uniform:10"), seed=7)
    draws = collections.Counter(drawer.next() for _ in range(20_000))
    assert len(drawer.ids) == len(set(drawer.ids)) == 10
    assert set(draws) == set(drawer.ids)
    assert all(k is not None and ID_LOW <= int(k) < ID_HIGH and len(k) == 6 for k in draws)
    assert max(draws.values()) / min(draws.values()) < 1.2


def test_zipf_follows_one_over_rank_to_the_s() -> None:
    k, s, n = 100, 1.2, 50_000
    drawer = KeyDrawer(parse_keys(f"zipf:{k}:{s}"), seed=3)
    draws = collections.Counter(drawer.next() for _ in range(n))
    harmonic = sum(1 / r**s for r in range(1, k + 1))
    for rank in (1, 2, 10):
        expected = n / rank**s / harmonic
        assert draws[drawer.ids[rank - 1]] == pytest.approx(expected, rel=0.08)
    assert draws.most_common(1)[0][0] == drawer.ids[0]


def test_draws_are_reproducible_by_seed() -> None:
    spec = parse_keys("zipf:500:0.9")
    a, b = KeyDrawer(spec, seed=1), KeyDrawer(spec, seed=1)
    assert [a.next() for _ in range(100)] == [b.next() for _ in range(100)]


# --- CSV rows ------------------------------------------------------------------------------


def test_csv_row_formats_and_leaves_absent_values_empty() -> None:
    assert csv_row(RequestRecord(1.5, 0.0023456, 200, "3", "123456", None)) == [
        "1.500000",
        "0.002346",
        "200",
        "3",
        "123456",
        "",
    ]
    assert csv_row(RequestRecord(0.0, 10.0, None, None, None, "TimeoutError")) == [
        "0.000000",
        "10.000000",
        "",
        "",
        "",
        "TimeoutError",
    ]


def test_write_csv_one_row_per_request(tmp_path: Path) -> None:
    records = [
        RequestRecord(i / 10, 0.001, 200, str(i % 3), str(100000 + i), None) for i in range(7)
    ]
    path = tmp_path / "r.csv"
    assert write_csv(path, records) == 7
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_FIELDS
    assert len(rows) == 7
    assert [r["key"] for r in rows] == [str(100000 + i) for i in range(7)]
    assert rows[4] == {
        "t_start": "0.400000",
        "latency_s": "0.001000",
        "status": "200",
        "replica": "1",
        "key": "100004",
        "error": "",
    }


# --- the contract helpers ------------------------------------------------------------------


def test_replica_id_like_the_reference_clients() -> None:
    assert replica_id("Hello from Server: 3fa91c") == "3fa91c"
    assert replica_id("") is None and replica_id(None) is None
    assert (
        replica_from_body(b'{"message": "Hello from Server: S5", "status": "successful"}') == "S5"
    )
    assert replica_from_body(b"") is None and replica_from_body(b"[1]") is None
    assert name_for_id("2", ["Server 1", "Server 2"]) == "Server 2"
    assert name_for_id("S5", ["Server 1", "S5"]) == "S5"
    assert name_for_id("9", ["Server 1"]) == "9"
    assert sorted(["Server 10", "Server 2", "S5", "Server 1"], key=natural_key) == [
        "S5",
        "Server 1",
        "Server 2",
        "Server 10",
    ]
    assert unknown_path_error("/other") == (
        "<Error> '/other' endpoint does not exist in server replicas"
    )


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ({"message": {"N": 2, "replicas": ["Server 1", "S5"]}, "status": "successful"}, True),
        ({"message": {"N": 3, "replicas": ["Server 1", "S5"]}, "status": "successful"}, False),
        ({"message": {"N": 1, "replicas": ["Server 1"]}, "status": "failure"}, False),
        ({"message": {"N": True, "replicas": ["Server 1"]}, "status": "successful"}, False),
        ({"message": {"N": 2, "replicas": ["S", "S"]}, "status": "successful"}, False),
        ({"message": {"N": 0, "replicas": []}, "status": "successful", "x": 1}, False),
        ("text", False),
    ],
)
def test_replicas_shape(body: Any, ok: bool) -> None:
    assert (replicas_shape_error(body) is None) is ok


# --- killing a replica ---------------------------------------------------------------------


def test_kill_command_template_keeps_a_name_with_a_space_as_one_argument() -> None:
    assert render_command("docker rm -f chlb-{id}", "Server 3fa91c", None) == [
        "docker",
        "rm",
        "-f",
        "chlb-3fa91c",
    ]
    assert render_command("echo {name} {pid}", "Server 1", 42) == ["echo", "Server 1", "42"]
    with pytest.raises(KillError, match="use"):
        render_command("docker rm {container}", "S5", None)


def test_is_loopback() -> None:
    assert is_loopback("http://127.0.0.1:5555") and is_loopback("http://localhost:1")
    assert is_loopback("http://[::1]:5555")
    assert not is_loopback("http://10.0.0.5:5555") and not is_loopback("http://lb1:5555")


class StubAdmin:
    def __init__(self, base: str, statuses: dict[str | None, dict[str, Any]]) -> None:
        self.base = base
        self.statuses = statuses

    async def status(self, url: str | None = None) -> dict[str, Any]:
        return self.statuses[url]


async def test_kill_refuses_without_a_pid_or_off_loopback() -> None:
    no_pid = {"leader": True, "replicas": [{"name": "Server 1", "pid": None}]}
    with pytest.raises(KillError, match="--kill-cmd"):
        await kill_replica(StubAdmin("http://127.0.0.1:1", {None: no_pid}), "Server 1", None)  # type: ignore[arg-type]
    remote = {"leader": True, "replicas": [{"name": "Server 1", "pid": 999_999_999}]}
    with pytest.raises(KillError, match="not a loopback"):
        await kill_replica(StubAdmin("http://10.1.2.3:5555", {None: remote}), "Server 1", None)  # type: ignore[arg-type]


async def test_kill_asks_the_leader_for_the_pid_and_runs_the_command() -> None:
    follower = {
        "leader": False,
        "replicas": [{"name": "Server 1", "pid": None}],
        "instances": [{"url": "http://127.0.0.1:2", "leader": True}],
    }
    leader = {"leader": True, "replicas": [{"name": "Server 1", "pid": 4242}]}
    admin = StubAdmin("http://127.0.0.1:1", {None: follower, "http://127.0.0.1:2": leader})
    how = await kill_replica(admin, "Server 1", "true {pid} {id}")  # type: ignore[arg-type]
    assert how == "true 4242 1"
    with pytest.raises(KillError, match="exited 1"):
        await kill_replica(admin, "Server 1", "false")  # type: ignore[arg-type]


# --- the command line and the driver's config ---------------------------------------------


def test_without_a_subcommand_it_is_run() -> None:
    assert normalize_argv([]) == ["run"]
    assert normalize_argv(["-n", "10000", "--url", "u"]) == ["run", "-n", "10000", "--url", "u"]
    assert normalize_argv(["a2", "--out", "x"]) == ["a2", "--out", "x"]
    assert normalize_argv(["--help"]) == ["--help"]
    args = parser().parse_args(normalize_argv(["-n", "50", "-c", "7"]))
    assert (args.requests, args.concurrency, args.keys) == (50, 7, KeySpec())
    args = parser().parse_args(["run", "--connections", "9", "--keys", "uniform:4"])
    assert (args.concurrency, args.keys) == (9, KeySpec("uniform", 4))
    args = parser().parse_args(["a3", "--kill-cmd", "docker rm -f chlb-{id}"])
    assert args.out == Path("analysis") and args.kill_cmd == "docker rm -f chlb-{id}"


def test_parser_refuses_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["run", "--keys", "zipf:3"], ["run", "-n", "0"], ["a1", "-n", "-5"]):
        with pytest.raises(SystemExit):
            parser().parse_args(argv)
    assert "expected" in capsys.readouterr().err


def test_target_url() -> None:
    assert target_url("http://127.0.0.1:5555", "/home") == "http://127.0.0.1:5555/home"
    assert target_url("http://127.0.0.1:5555/", "home") == "http://127.0.0.1:5555/home"
    assert target_url("http://127.0.0.1:5555/home", "/x") == "http://127.0.0.1:5555/home"
    assert base_url("http://127.0.0.1:5555/home?id=1") == "http://127.0.0.1:5555"
    assert base_url("127.0.0.1:5556") == "http://127.0.0.1:5556"


def test_drive_config_is_bounded() -> None:
    assert DriveConfig("u").expected == 10_000
    assert DriveConfig("u", count=None, duration_s=2.0, rate=100).expected == 200
    assert DriveConfig("u", count=50, duration_s=2.0, rate=100).expected == 50
    assert DriveConfig("u", count=None, duration_s=2.0).expected is None
    for bad in (
        {"count": None},
        {"count": 0},
        {"count": None, "duration_s": -1.0},
        {"rate": -1.0},
        {"concurrency": 0},
    ):
        with pytest.raises(ValueError):
            DriveConfig("u", **bad)  # type: ignore[arg-type]


def test_table_aligns_numbers_right_and_text_left() -> None:
    assert table(["replica", "requests"], [["Server 1", 3369], ["S5", 12]]).splitlines() == [
        "| replica  | requests |",
        "|----------|---------:|",
        "| Server 1 |     3369 |",
        "| S5       |       12 |",
    ]

"""The observability files agree with the code: every dashboard parses and queries only metrics
the balancer and the replicas export, and Prometheus' and Grafana's provisioning fit together.

The metric names come from scraping a running in-process balancer's and one of its replicas'
``/metrics`` after traffic, so a renamed metric fails here, not on a blank Grafana panel.
``promtool`` (optional, skipped when absent) checks the Prometheus config and every PromQL
expression with Prometheus' own parser.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BalancerFactory, eventually

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"
PROMETHEUS_YML = ROOT / "infra" / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"

# Series Prometheus makes itself (for every target; for every alert rule), not exported by any
# /metrics.
PROMETHEUS_SYNTHETIC = {
    "up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE",
}  # fmt: skip

# PromQL words that look like identifiers but are not metric names.
PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "exp", "floor", "histogram_count", "histogram_fraction",
    "histogram_quantile", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "irate",
    "label_join", "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time",
    "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear",
    "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn",
    "sin", "sinh", "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time",
    "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
}  # fmt: skip
PROMQL_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile",
}  # fmt: skip
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "atan2", "inf", "nan", "start", "end",
}  # fmt: skip
NOT_METRICS = PROMQL_FUNCTIONS | PROMQL_AGGREGATIONS | PROMQL_KEYWORDS

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# An identifier not glued to a preceding word, number, `$variable` or `.`, followed by `{`, `[`,
# `)`, whitespace, the end, or (as an argument or operand) `,` or a binary operator: a selector.
# A name followed by `(` is a function call.
_SELECTOR = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?=\s*[{\[)]|[\s,+\-*/%^=!<>]|$)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (see the module docstring)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)  # label names and values inside selectors
    text = _RANGE.sub("[]", text)  # durations, $__rate_interval, subqueries' steps
    text = _LABEL_LIST.sub(r"\1", text)  # by (le, replica), ignoring (replica), group_left ()
    return {m for m in _SELECTOR.findall(text) if m not in NOT_METRICS}


def test_the_extractor_finds_selectors_and_only_them() -> None:
    cases = {
        "lb_leader": {"lb_leader"},
        'up{job="replicas"}': {"up"},
        "count(count by (fingerprint) (lb_ring_info))": {"lb_ring_info"},
        "histogram_quantile(0.99, sum by (le, replica) "
        '(rate(server_request_duration_seconds_bucket{path="/home"}[$__rate_interval])))': {
            "server_request_duration_seconds_bucket"
        },
        "sum by (replica) (rate(a_total[1m])) / ignoring (replica) group_left () "
        "sum(rate(a_total[5m] offset 1m))": {"a_total"},
        "max(x) > bool 0 and on(instance) y{le=~'0.5|1'} unless z [5m:1m]": {"x", "y", "z"},
        'label_replace(m, "dst", "$1", "src", "(.*)") * 2e3 + $threshold': {"m"},
        "clamp_max(a,1)+b/c>=0": {"a", "b", "c"},
    }
    for expr, names in cases.items():
        assert metric_names(expr) == names, expr


def load_dashboards() -> dict[str, dict[str, Any]]:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, f"no dashboards in {DASHBOARDS}"
    return {f.name: json.loads(f.read_text()) for f in files}


def panels_of(board: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in board["panels"]:
        found.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
        if panel["type"] != "row":
            found.append(panel)
    return found


def exprs() -> dict[str, str]:
    """Every PromQL expression of every dashboard, by ``file: panel (refId)``."""
    return {
        f"{name}: {panel['title']} ({target['refId']})": target["expr"]
        for name, board in load_dashboards().items()
        for panel in panels_of(board)
        for target in panel["targets"]
    }


def datasource_uid() -> str:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = doc["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    return str(source["uid"])


def test_dashboards_parse_and_every_panel_queries_prometheus() -> None:
    uid = datasource_uid()
    uids = set()
    for name, board in load_dashboards().items():
        assert board["uid"] not in uids, f"{name}: duplicate uid"
        uids.add(board["uid"])
        assert board["title"] and board["schemaVersion"] >= 36
        panels = panels_of(board)
        assert panels, name
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in panels:
            where = f"{name}: {panel['title']}"
            assert panel["targets"], where
            assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, where
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, where
            for target in panel["targets"]:
                assert target["expr"].strip(), where
                assert target["datasource"] == {"type": "prometheus", "uid": uid}, where
            assert panel["datasource"]["uid"] == uid, where
        # Variables and annotation queries ask the provisioned Prometheus too.
        for item in [*board["templating"]["list"], *board["annotations"]["list"]]:
            assert item["datasource"] == {"type": "prometheus", "uid": uid}, f"{name}: {item}"


async def scrape_texts(make_balancer: BalancerFactory) -> dict[str, str]:
    """A balancer's and one of its replicas' ``/metrics`` (by job: ``balancers``, ``replicas``)
    after traffic that gives every metric family samples: replies, a replica's 404, the
    balancer's own 400, and scrapes repeated until every family has some (the key-space shares
    are computed off the loop once somebody scrapes, heartbeat ages follow the first probe)."""
    lb = await make_balancer()
    for i in range(30):
        async with lb.client.get("/home", params={"id": str(i)}) as resp:
            await resp.read()
    async with lb.client.get("/nope") as resp:  # a replica's 404 (relayed as the 400)
        await resp.read()
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.service.port)
    writer.write(b"NOT HTTP\r\n\r\n")  # the balancer's own 400
    await reader.read()
    writer.close()
    await writer.wait_closed()
    async with lb.client.get("/lb/status") as resp:
        address = (await resp.json())["replicas"][0]["address"]
    texts: dict[str, str] = {}

    async def every_family_sampled() -> bool:
        async with lb.client.get("/metrics") as resp:
            texts["balancers"] = await resp.text()
        return all(f.samples for f in text_string_to_metric_families(texts["balancers"]))

    await eventually(every_family_sampled)
    async with aiohttp.ClientSession() as session, session.get(f"http://{address}/metrics") as r:
        texts["replicas"] = await r.text()
    return texts


async def exported_names(make_balancer: BalancerFactory) -> set[str]:
    """Every series name a balancer's and a replica's ``/metrics`` export after traffic."""
    texts = list((await scrape_texts(make_balancer)).values())
    # The series names: a counter family `x` is `x_total`, a histogram `x` is `x_bucket`, `x_sum`
    # and `x_count` (never a bare `x`), a gauge is its name; with or without samples right now.
    names: set[str] = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    for text in texts:
        for family in text_string_to_metric_families(text):
            names.update(s.name for s in family.samples)
            names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


async def test_every_queried_metric_is_exported(make_balancer: BalancerFactory) -> None:
    exported = await exported_names(make_balancer)
    assert {"lb_upstream_latency_seconds_bucket", "server_requests_total"} <= exported
    assert "lb_upstream_latency_seconds" not in exported
    assert "server_requests" not in exported
    queried: dict[str, set[str]] = {}
    for where, expr in exprs().items():
        for name in metric_names(expr):
            queried.setdefault(name, set()).add(where)
    assert len(queried) > 0
    known = exported | PROMETHEUS_SYNTHETIC
    unknown = {n: sorted(w) for n, w in queried.items() if n not in known}
    assert not unknown, f"dashboards query metrics nothing exports: {unknown}"
    # The panels users asked for are there.
    assert {
        "lb_upstream_responses_total",
        "lb_replica_keyspace_share",
        "lb_replica_up",
        "lb_ring_members",
        "lb_ring_epoch",
        "lb_leader",
        "lb_upstream_latency_seconds_bucket",
        "server_requests_total",
        "lb_replicas_desired",
        "lb_state_store_up",
        "ALERTS",
    } <= set(queried)


def test_prometheus_scrapes_the_balancers_and_discovers_the_replicas() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"balancers", "replicas"}
    (static,) = jobs["balancers"]["static_configs"]
    assert sorted(static["targets"]) == ["lb1:5555", "lb2:5555"]
    replicas = jobs["replicas"]
    sd_urls = [sd["url"] for sd in replicas["http_sd_configs"]]
    assert sd_urls[0] == "http://lb1:5555/lb/targets"
    assert all(sd["refresh_interval"] == "5s" for sd in replicas["http_sd_configs"])
    assert "static_configs" not in replicas
    relabeled = {
        label for rule in replicas["relabel_configs"] for label in rule.get("source_labels", [])
    }
    assert "replica" in relabeled
    # The job label the discovery sets is the job's own name.
    from balancer.api.discovery import JOB

    assert JOB == "replicas"


def test_grafana_provisioning_fits_the_compose_file() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    grafana, prometheus = compose["services"]["grafana"], compose["services"]["prometheus"]
    assert "observability" in grafana["profiles"] and "observability" in prometheus["profiles"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "chlb.yml").read_text())
    (files,) = provider["providers"]
    assert files["type"] == "file"
    assert mounts["./grafana/dashboards"] == files["options"]["path"]
    prometheus_mounts = dict(v.split(":")[:2] for v in prometheus["volumes"])
    assert (
        prometheus_mounts["./infra/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    )


def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        pytest.skip("promtool not installed (set PROMTOOL or put it on PATH)")
    return found


def test_promtool_accepts_the_config_and_every_expression(tmp_path: Path) -> None:
    tool = promtool()
    checked = subprocess.run(
        [tool, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Every dashboard expression as a recording rule: promtool parses each with PromQL's parser.
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": expr.replace("$__rate_interval", "1m")}
        for i, expr in enumerate(exprs().values())
    ]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    checked = subprocess.run(
        [tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

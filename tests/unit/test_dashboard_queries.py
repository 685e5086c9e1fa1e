"""Every dashboard query against what the balancer and the replicas really export.

The series, their types and their labels come from scraping a running in-process balancer and
one of its replicas (``tests.unit.test_dashboards.scrape_texts``), plus the labels Prometheus adds
(``job`` and ``instance`` on every target, ``replica`` on the replicas' through relabeling, see
infra/prometheus/prometheus.yml). Checked here, with a PromQL parser (``tests.support.promql``):
  - every exported metric family is shown by some panel (``NO_PANEL`` lists the exceptions);
  - selectors, ``by``/``without``/``on``/``ignoring`` and legends use labels the series have;
  - ``rate``/``irate``/``increase`` only over counters, counters never shown raw, gauges never
    rated; ``histogram_quantile`` only over ``_bucket`` series with ``le`` kept;
  - the dashboard variables: defined ones are used, used ones are defined (or Grafana's own),
    and every query of a series carrying a variable's label filters on that variable.
The live Prometheus test (tests/observability/) then evaluates each query for real.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BalancerFactory
from tests.support.promql import (
    Aggregation,
    Binary,
    Call,
    Node,
    PromQLSyntaxError,
    Selector,
    output_labels,
    parse,
    walk,
)
from tests.unit.test_dashboards import load_dashboards, panels_of, scrape_texts

# Metric families that make no sense as a panel. Besides these, a `_created` series
# (prometheus_client's creation timestamp of a counter or histogram) is no metric of its own.
NO_PANEL: dict[str, str] = {}

COUNTER_PARTS = frozenset({"total", "bucket", "sum", "count"})
RATES = frozenset({"rate", "irate", "increase", "resets"})
GAUGE_FUNCTIONS = frozenset({"deriv", "delta", "idelta", "predict_linear"})
GRAFANA_GLOBALS = frozenset(
    {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
     "__from", "__to", "__dashboard", "__name"}
)  # fmt: skip
VARIABLE_TYPES = frozenset({"query", "custom", "datasource", "interval"})
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class Series:
    family: str
    part: str  # "total", "bucket", "sum", "count" (counters), "" (a gauge or info value)
    job: str  # "balancers", "replicas", or "" for what Prometheus makes itself
    labels: frozenset[str]

    @property
    def filterable(self) -> frozenset[str]:
        """Labels a dashboard variable may filter on: a replica's ``instance`` is only a copy
        of its ``replica`` (relabeling), never a balancer instance."""
        return self.labels - {"job"} - ({"instance"} if self.job == "replicas" else set())


# Series Prometheus makes itself. ALERTS carry each rule's labels besides these; `severity` is
# on every chlb alert (infra/prometheus/rules/chlb-alerts.yml).
SYNTHETIC = {
    name: Series(name, "", "", frozenset(labels))
    for name, labels in {
        "up": {"job", "instance", "replica"},
        "scrape_duration_seconds": {"job", "instance"},
        "ALERTS": {"alertname", "alertstate", "severity"},
        "ALERTS_FOR_STATE": {"alertname", "severity"},
    }.items()
}


def series_of(texts: dict[str, str]) -> dict[str, Series]:
    """Every series name the scrape shows (with or without samples), by name."""
    found = dict(SYNTHETIC)
    parts = {"counter": ["total"], "histogram": ["bucket", "sum", "count"]}
    for job, text in texts.items():
        targets = {"job", "instance"} | ({"replica"} if job == "replicas" else set())
        for family in text_string_to_metric_families(text):
            for part in parts.get(family.type, [""]):
                name = f"{family.name}_{part}" if part else family.name
                labels = {k for s in family.samples if s.name == name for k in s.labels}
                found[name] = Series(family.name, part, job, frozenset(labels | targets))
    return found


@pytest.fixture
async def series(make_balancer: BalancerFactory) -> dict[str, Series]:
    return series_of(await scrape_texts(make_balancer))


def targets() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dashboard file, panel, target) for every query of every panel."""
    return [
        (name, panel, target)
        for name, board in load_dashboards().items()
        for panel in panels_of(board)
        for target in panel["targets"]
    ]


def query_problems(expr: str, legend: str, series: dict[str, Series]) -> list[str]:
    """What is wrong with one panel query (see the module docstring)."""
    try:
        tree = parse(expr)
    except PromQLSyntaxError as exc:
        return [f"does not parse: {exc}"]

    def labels_of(name: str | None) -> frozenset[str]:
        return series[name].labels if name in series else frozenset()

    found = []
    for node, ancestors in walk(tree):
        if isinstance(node, Selector):
            found += _selector_problems(node, ancestors, series)
        elif isinstance(node, Call):
            found += _call_problems(node, series, labels_of)
        elif isinstance(node, Aggregation) and node.grouping:
            missing = set(node.grouping) - output_labels(node.expr, labels_of)
            found += [f"{node.op} groups by {sorted(missing)}, which its input lacks"] * bool(
                missing
            )
        elif isinstance(node, Binary) and node.matching:
            both = output_labels(node.lhs, labels_of) | output_labels(node.rhs, labels_of)
            missing = set(node.matching) - both
            found += [f"`{node.op}` matches on {sorted(missing)}, which no side has"] * bool(
                missing
            )
    missing = set(_LEGEND_LABEL.findall(legend)) - output_labels(tree, labels_of)
    found += [f"legend uses {sorted(missing)}, which the result lacks"] * bool(missing)
    return found


def _selector_problems(
    node: Selector, ancestors: tuple[Node, ...], series: dict[str, Series]
) -> list[str]:
    name = node.name or "?"
    if name not in series:
        return [f"selects {name}, which nothing exports"]
    s, found = series[name], []
    missing = {m.label for m in node.matchers} - s.labels - {"__name__"}
    found += [f"{name}{{…}} matches on {sorted(missing)}, which it lacks"] * bool(missing)
    parent = ancestors[-1] if ancestors else None
    rated = isinstance(parent, Call) and parent.func in RATES
    if s.part in COUNTER_PARTS and not rated:
        found.append(f"counter {name} shown without rate/irate/increase")
    if s.part not in COUNTER_PARTS and rated:
        found.append(f"{parent.func} over {name}, which is not a counter")  # type: ignore[union-attr]
    if s.part == "bucket" and not any(
        isinstance(a, Call) and a.func == "histogram_quantile" for a in ancestors
    ):
        found.append(f"{name} outside histogram_quantile")
    return found


def _call_problems(node: Call, series: dict[str, Series], labels_of: Any) -> list[str]:
    if node.func in GAUGE_FUNCTIONS:
        names = [n.name for n, _ in walk(node) if isinstance(n, Selector) and n.name in series]
        return [f"{node.func} over {n}, a counter" for n in names if n and series[n].part != ""]
    if node.func != "histogram_quantile" or len(node.args) != 2:
        return []
    found = []
    if "le" not in output_labels(node.args[1], labels_of):
        found.append("histogram_quantile over an aggregation that drops `le`")
    for n, _ in walk(node.args[1]):
        if isinstance(n, Selector) and n.name in series and series[n.name].part != "bucket":
            found.append(f"histogram_quantile over {n.name}, not a _bucket series")
    return found


def test_the_query_checks_catch_what_they_are_for(series: dict[str, Series]) -> None:
    def problems(expr: str, legend: str = "") -> str:
        return " | ".join(query_problems(expr, legend, series))

    assert problems("sum by (replica) (rate(lb_upstream_responses_total[1m]))", "{{replica}}") == ""
    assert "not a counter" in problems("rate(lb_ring_epoch[1m])")
    assert "without rate" in problems("sum(lb_upstream_retries_total)")
    assert "drops `le`" in problems(
        "histogram_quantile(0.9, sum by (replica) (rate(lb_upstream_latency_seconds_bucket[1m])))"
    )
    assert "not a _bucket" in problems(
        "histogram_quantile(0.9, sum by (le) (rate(lb_upstream_latency_seconds_count[1m])))"
    )
    assert "outside histogram_quantile" in problems(
        "sum(rate(lb_upstream_latency_seconds_bucket[1m]))"
    )
    assert "a counter" in problems("deriv(lb_refused_connections_total[5m])")
    assert "groups by ['code']" in problems("sum by (code) (lb_upstream_in_flight)")
    assert "legend uses ['replica']" in problems("sum(lb_upstream_in_flight)", "{{replica}}")
    assert "matches on ['replica']" in problems('lb_leader{replica="Server 1"}')
    assert "nothing exports" in problems("lb_no_such_metric")
    assert "matches on ['nope']" in problems("lb_leader / on (nope) lb_ring_epoch")
    assert "does not parse" in problems("sum(rate(x[1m])")
    # The replicas' series carry `replica` (relabeling); `path` is the replica's own label.
    assert problems("sum by (replica, path) (rate(server_requests_total[1m]))") == ""


def test_every_panel_query_uses_real_labels_and_the_right_functions(
    series: dict[str, Series],
) -> None:
    bad = {
        f"{name}: {panel['title']} ({target['refId']})": found
        for name, panel, target in targets()
        if (found := query_problems(target["expr"], target.get("legendFormat", ""), series))
    }
    assert not bad, bad


def test_every_exported_metric_family_has_a_panel(series: dict[str, Series]) -> None:
    scraped = {s.family for s in series.values() if s.job}
    families = {f for f in scraped if f.removesuffix("_created") == f or f[:-8] not in scraped}
    assert {"lb_upstream_responses", "lb_ring_epoch", "server_requests", "server_info"} <= families
    shown: set[str] = set()
    for _, _, target in targets():
        for node, _ in walk(parse(target["expr"])):
            if isinstance(node, Selector) and node.name is not None:
                shown.add(series[node.name].family if node.name in series else node.name)
    no_panel = families - shown - set(NO_PANEL)
    assert not no_panel, f"metric families no panel shows: {sorted(no_panel)}"
    assert not set(NO_PANEL) & shown, "NO_PANEL lists a metric a panel shows"


def _variable_names(text: str) -> set[str]:
    return {a or b for a, b in _VARIABLE.findall(text) if not (a or b).isdigit()}


def _filters_on(expr: str, label: str, variable: str) -> bool:
    wanted = {f"${variable}", f"${{{variable}}}"}
    return any(
        m.label == label and m.value in wanted
        for n, _ in walk(parse(expr))
        if isinstance(n, Selector)
        for m in n.matchers
    )


def variable_problems(board: dict[str, Any], series: dict[str, Series]) -> list[str]:
    """The variables of one dashboard: defined, used, typed, and applied consistently."""
    found, labels = [], {}
    defined = {v["name"]: v for v in board["templating"]["list"]}
    for name, var in defined.items():
        if var["type"] not in VARIABLE_TYPES or "current" not in var:
            found.append(f"${name}: type {var['type']!r}, or no default (`current`)")
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", str(var.get("query", "")))
        if var["type"] == "query" and not (m and m[1] in series and m[2] in series[m[1]].labels):
            found.append(f"${name}: query {var.get('query')!r} is not label_values of a real label")
        labels[name] = m[2] if m else name
    used: set[str] = set()
    for panel in panels_of(board):
        for target in panel["targets"]:
            expr = target["expr"]
            names = _variable_names(expr + target.get("legendFormat", "") + panel["title"])
            used |= names
            found += [f"{panel['title']}: ${n} is not defined" for n in names - set(defined)
                      - GRAFANA_GLOBALS]  # fmt: skip
            selected = [n.name for n, _ in walk(parse(expr)) if isinstance(n, Selector)]
            # Scraped series only: a variable does not filter ALERTS or Prometheus' `up`.
            scraped = [series[s] for s in selected if s in series and series[s].job]
            for var, label in labels.items():
                carries = any(label in s.filterable for s in scraped)
                if carries and not _filters_on(expr, label, var):
                    found.append(f'{panel["title"]} ({target["refId"]}): no {label}=~"${var}"')
    found += [f"${n} is used by no panel" for n in set(defined) - used]
    return found


def test_dashboard_variables_are_defined_used_and_applied_to_every_query(
    series: dict[str, Series],
) -> None:
    for name, board in load_dashboards().items():
        assert board["templating"]["list"], f"{name}: no variables"
        assert variable_problems(board, series) == [], name
    # The check catches a query that forgets a filter, and a variable nobody uses.
    board = load_dashboards()["chlb-traffic.json"]
    panel = next(p for p in panels_of(board) if p["title"] == "Traffic per replica")
    panel["targets"][0]["expr"] = "sum by (replica) (rate(lb_upstream_responses_total[1m]))"
    board["templating"]["list"].append({**board["templating"]["list"][0], "name": "unused"})
    found = " | ".join(variable_problems(board, series))
    assert 'no instance=~"$instance"' in found and 'no replica=~"$replica"' in found
    assert "$unused is used by no panel" in found


def test_every_dashboard_shows_alert_state() -> None:
    for name, board in load_dashboards().items():
        annotations = [a.get("expr", "") for a in board["annotations"]["list"]]
        assert any("ALERTS" in e and 'alertstate="firing"' in e for e in annotations), name
    exprs = [t["expr"] for _, _, t in targets()]
    assert any("ALERTS{" in e for e in exprs) and any("ALERTS_FOR_STATE" in e for e in exprs)

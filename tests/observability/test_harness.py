"""The live test's own machinery, without processes: Grafana's variable rules as the harness
applies them, the labels a panel shows, the walk over dashboards, and the config rendering
that may change host:port strings and nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.observability.grafana import (
    ALL,
    PanelQuery,
    Variable,
    builtins,
    dashboard_queries,
    interpolate,
    labels_used,
    resolve_variables,
)
from tests.observability.harness import (
    COMPOSE_HOSTS,
    CONFIG,
    PromApi,
    duration_s,
    intervals,
    render_config,
)
from tests.observability.scenario import AlertBounds

FIXED = builtins(range_s=600, scrape_s=5)


def test_builtin_intervals_follow_grafana() -> None:
    assert FIXED["__interval"] == "5000ms"  # never below the scrape interval
    assert FIXED["__rate_interval"] == "20000ms"  # 4 × scrape
    assert FIXED["__range"] == "600s" and FIXED["__range_ms"] == "600000"
    wide = builtins(range_s=100_000, scrape_s=5)  # 100 s per point over 1000 points
    assert wide["__interval"] == "100000ms" and wide["__rate_interval"] == "105000ms"
    assert interpolate("rate(x[$__rate_interval])", {}, FIXED) == "rate(x[20000ms])"
    assert interpolate("x[$__range_s]", {}, FIXED) == "x[600]"  # the longest name wins


@pytest.mark.parametrize(
    ("variable", "expr", "expected"),
    [
        (Variable("v", ["a\\b'c"]), 'x{l="$v"}', 'x{l="a\\\\b\\\\\'c"}'),
        (Variable("v", ["S.1", "S 2"], multi=True), 'x{l=~"$v"}', 'x{l=~"(S\\\\.1|S 2)"}'),
        (Variable("v", ["S.1"], multi=True), 'x{l=~"${v}"}', 'x{l=~"S\\\\.1"}'),
        (Variable("v", [ALL], ["a", "b"], include_all=True), 'x{l=~"$v"}', 'x{l=~"(a|b)"}'),
        (Variable("v", [ALL], ["a"], include_all=True, all_value=".*"), "$v", ".*"),
        (Variable("v", ["a", "b"], multi=True), "${v:pipe} [[v]]", "a|b (a|b)"),
        (Variable("v", ["a.b", "c"], multi=True), "${v:regex} ${v:csv}", "(a\\.b|c) a.b,c"),
    ],
)
def test_variables_are_inserted_by_grafanas_rules(
    variable: Variable, expr: str, expected: str
) -> None:
    assert interpolate(expr, {"v": variable}, FIXED) == expected


def test_an_unknown_variable_fails() -> None:
    with pytest.raises(AssertionError, match="not a variable"):
        interpolate("x{l=$nope}", {}, FIXED)


def _q(expr: str, legend: str = "") -> PanelQuery:
    return PanelQuery("d", "p", "A", expr, legend, False)


@pytest.mark.parametrize(
    ("expr", "legend", "expected"),
    [
        ("sum by (replica) (rate(x[1m]))", "{{replica}}", {"replica"}),
        ("sum(rate(x[1m])) by (code)", "", {"code"}),
        ("count(count by (fingerprint) (x))", "fingerprints", set()),
        ("histogram_quantile(0.99, sum by (le, replica) (rate(b[1m])))", "", {"replica"}),
        ("sum by (replica) (x) / ignoring (replica) group_left () sum(x)", "", {"replica"}),
        ('x{path="by (foo)"}', "{{ instance }} {{path}}", {"instance", "path"}),
        ("max(sum by (a) (x))", "", set()),
        ("sum by (a) (count by (b) (x))", "", {"a"}),
        ("(sum without (z) (x)) * 2 > bool sum by (a) (y)", "", {"a"}),
    ],
)
def test_labels_used_are_the_legend_and_the_grouping_that_survives(
    expr: str, legend: str, expected: set[str]
) -> None:
    assert labels_used(_q(expr, legend)) == expected


def test_every_prometheus_query_is_found_nested_rows_and_annotations_too() -> None:
    prom = {"type": "prometheus", "uid": "prometheus"}
    doc: dict[str, Any] = {
        "title": "D",
        "panels": [
            {"type": "timeseries", "title": "top", "targets": [{"refId": "A", "expr": "up"}]},
            {
                "type": "row",
                "title": "collapsed",
                "panels": [
                    {
                        "type": "table",
                        "title": "inner",
                        "datasource": prom,
                        "targets": [{"refId": "B", "expr": "x", "instant": True}],
                    },
                    {
                        "type": "timeseries",
                        "title": "other source",
                        "targets": [{"refId": "C", "expr": "y", "datasource": {"type": "loki"}}],
                    },
                ],
            },
            {"type": "alertlist", "title": "alerts"},
        ],
        "annotations": {
            "list": [
                {"name": "builtin", "datasource": {"type": "grafana", "uid": "-- Grafana --"}},
                {"name": "fired", "datasource": prom, "expr": "ALERTS", "titleFormat": "{{a}}"},
            ]
        },
    }
    queries, others = dashboard_queries({"D": doc})
    assert [(q.panel, q.ref_id, q.expr, q.instant) for q in queries] == [
        ("top", "A", "up", False),
        ("inner", "B", "x", True),
        ("annotation: fired", "", "ALERTS", False),
    ]
    assert [(o.panel, o.kind) for o in others] == [
        ("collapsed", "row"),
        ("other source", "timeseries"),
        ("alerts", "alertlist"),
    ]


class StubApi(PromApi):
    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, str]]] = []

    async def get(self, path: str, params: Any = None) -> Any:
        self.asked.append((path, dict(params or {})))
        return ["127.0.0.1:1", "127.0.0.1:2"]


async def test_query_variables_take_their_values_from_prometheus() -> None:
    doc = {
        "templating": {
            "list": [
                {"name": "i", "type": "query", "query": "label_values(lb_leader, instance)"},
                {
                    "name": "j",
                    "type": "query",
                    "query": {"query": "label_values(instance)"},
                    "regex": "/:(?<value>\\d)$/",
                    "includeAll": True,
                    "current": {"value": ["$__all"]},
                },
                {"name": "c", "type": "custom", "query": "one : 1, two : 2"},
            ]
        }
    }
    api = StubApi()
    variables = await resolve_variables(doc, api, 10.0, 20.0, FIXED)
    assert api.asked[0] == (
        "label/instance/values",
        {"start": "10.000", "end": "20.000", "match[]": "lb_leader"},
    )
    assert variables["i"].values == ["127.0.0.1:1"]  # no current value: the first option
    assert variables["j"].values == [ALL] and variables["j"].options == ["1", "2"]
    assert interpolate("$i $j $c", variables, FIXED) == "127.0.0.1:1 (1|2) 1"


def test_the_config_is_rendered_with_only_its_hosts_changed(tmp_path: Path) -> None:
    hosts = {"lb1:5555": "127.0.0.1:1111", "lb2:5555": "127.0.0.1:2222"}
    assert set(hosts) == set(COMPOSE_HOSTS)
    text = render_config(tmp_path, hosts).read_text()
    assert "lb1:5555" not in text and "lb2:5555" not in text
    for old, new in hosts.items():
        text = text.replace(new, old)
    assert text == CONFIG.read_text()
    with pytest.raises(AssertionError, match="stale"):
        render_config(tmp_path / "again", {"lb9:5555": "127.0.0.1:1"})


def test_durations_and_intervals() -> None:
    assert [duration_s(d) for d in ("5s", "1m30s", "250ms", "2h")] == [5, 90, 0.25, 7200]
    with pytest.raises(ValueError):
        duration_s("5")
    assert intervals("{}").scrape_timeout_s == 10  # Prometheus' defaults: 1m, 1m, 10s
    fast = intervals("global: {scrape_interval: 5s, evaluation_interval: 2s}")
    assert (fast.scrape_s, fast.evaluation_s, fast.scrape_timeout_s) == (5, 2, 5)


def test_the_grace_outlasts_the_latest_firing() -> None:
    bounds = AlertBounds.of(intervals("global: {scrape_interval: 5s}"), for_s=10)
    assert bounds.pending_s < bounds.firing_s < bounds.grace_s
    assert bounds.firing_s - bounds.pending_s >= 10

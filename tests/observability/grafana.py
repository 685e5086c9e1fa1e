"""Every Prometheus query of every dashboard in grafana/dashboards, as Grafana would send it.

Owns ``dashboard_queries`` (each panel target, nested rows and annotation queries included,
read from the JSON files at call time), ``resolve_variables`` (the templating list: current
values, else the first value the variable's own query finds in Prometheus), ``interpolate``
(Grafana's template syntax ``$var``, ``${var}``, ``${var:format}``, ``[[var]]`` with the
Prometheus data source's escaping rules, and the built-in ``$__interval``,
``$__rate_interval``, ``$__range``…) and ``labels_used`` (the labels a panel shows: its
``{{label}}`` legend and the grouping that survives to its result).

Grafana's rules copied here (public/app/features/templating/template_srv.ts and the Prometheus
data source's ``interpolateQueryExpr``): a variable that is neither multi-value nor has "All"
is inserted as is (backslashes and quotes escaped); otherwise each value is regex-escaped and
several become ``(a|b)``. "All" is the variable's custom all value, inserted unescaped, or else
every option. ``$__rate_interval`` is ``max($__interval + scrape, 4 × scrape)`` with ``scrape``
the data source's ``timeInterval``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.observability.harness import DASHBOARDS, DATASOURCES, PromApi, duration_s

ALL = "$__all"
# Grafana's variable syntax (template_srv's variableRegex).
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}"
)
_LEGEND_LABEL = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BY = re.compile(r"\bby\s*\(([^()]*)\)")
# Functions whose result keeps the labels of their argument (histogram_quantile drops `le`).
_KEEPS_LABELS = {
    "", "abs", "ceil", "clamp", "clamp_max", "clamp_min", "floor", "histogram_quantile",
    "label_join", "label_replace", "round", "sort", "sort_desc", "topk", "bottomk",
}  # fmt: skip


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str  # the panel's title; "annotation: <name>" for an annotation query
    ref_id: str
    expr: str  # as written in the JSON, variables not yet substituted
    legend: str
    instant: bool  # an instant query (Grafana's "instant" target option); else a range query


@dataclass(frozen=True)
class PanelWithoutQuery:
    dashboard: str
    panel: str
    kind: str  # the panel type: row, text, alertlist, …


@dataclass
class Variable:
    name: str
    values: list[str]  # the selected values (ALL alone for "All")
    options: list[str] = field(default_factory=list)  # every value it offers
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None


def _walk(panels: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk(panel.get("panels", []))  # a collapsed row holds its panels


def _is_prometheus(source: object) -> bool:
    """A target's data source is Prometheus: the default (unset), the provisioned one, or a
    data source variable (the dashboards' only data source is Prometheus)."""
    if source is None:
        return True
    if isinstance(source, str):
        return source.startswith("$") or source.lower() == "prometheus"
    if isinstance(source, dict):
        uid, kind = str(source.get("uid", "")), source.get("type")
        return kind == "prometheus" or uid.startswith("$") or (kind is None and uid != "grafana")
    return False


def load_dashboards(directory: Path = DASHBOARDS) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` dashboard in ``directory``, by title, read now."""
    docs = [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]
    return {doc["title"]: doc for doc in docs}


def dashboard_queries(
    dashboards: Mapping[str, Mapping[str, Any]],
) -> tuple[list[PanelQuery], list[PanelWithoutQuery]]:
    """Every Prometheus target of every panel (and annotation) of each dashboard, and the
    panels without one."""
    queries: list[PanelQuery] = []
    others: list[PanelWithoutQuery] = []
    for title, doc in dashboards.items():
        for panel in _walk(doc.get("panels", [])):
            found = [
                PanelQuery(
                    title,
                    panel.get("title", ""),
                    t.get("refId", ""),
                    t["expr"],
                    t.get("legendFormat", ""),
                    bool(t.get("instant")) and not t.get("range"),
                )
                for t in panel.get("targets", [])
                if t.get("expr") and _is_prometheus(t.get("datasource", panel.get("datasource")))
            ]
            queries += found
            if not found:
                others.append(PanelWithoutQuery(title, panel.get("title", ""), panel["type"]))
        for note in doc.get("annotations", {}).get("list", []):
            expr = note.get("expr") or (note.get("target") or {}).get("expr")
            if expr and _is_prometheus(note.get("datasource")):
                legend = note.get("titleFormat", "") + note.get("textFormat", "")
                queries.append(
                    PanelQuery(title, f"annotation: {note.get('name')}", "", expr, legend, False)
                )
    return queries, others


def scrape_interval_s() -> float:
    """The Prometheus data source's ``timeInterval`` (Grafana's default 15 s when unset)."""
    for path in sorted(DATASOURCES.glob("*.y*ml")):
        for source in (yaml.safe_load(path.read_text()) or {}).get("datasources", []):
            if source.get("type") == "prometheus":
                return duration_s(source.get("jsonData", {}).get("timeInterval", "15s"))
    return 15.0


def builtins(range_s: float, scrape_s: float, max_points: int = 1000) -> dict[str, str]:
    """Grafana's built-in variables for a query over ``range_s`` seconds: ``$__interval`` is
    the range over the panel's data points, never below the scrape interval."""
    interval_s = max(scrape_s, range_s / max_points)
    rate_s = max(interval_s + scrape_s, 4 * scrape_s)
    return {
        "__interval": f"{round(interval_s * 1000)}ms",
        "__interval_ms": str(round(interval_s * 1000)),
        "__rate_interval": f"{round(rate_s * 1000)}ms",
        "__range": f"{round(range_s)}s",
        "__range_s": str(round(range_s)),
        "__range_ms": str(round(range_s * 1000)),
    }


def _regex_escape(value: str) -> str:
    """The Prometheus data source's ``prometheusSpecialRegexEscape``."""
    return re.sub(
        r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(0), value.replace("\\", "\\\\\\\\")
    )


def _format(variable: Variable, values: list[str], fmt: str | None) -> str:
    if fmt is None:  # the Prometheus data source's interpolateQueryExpr
        if not variable.multi and not variable.include_all:
            return ",".join(v.replace("\\", "\\\\").replace("'", "\\\\'") for v in values)
        escaped = [_regex_escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt == "regex":
        escaped = [re.sub(r"[\\^$*+?.()|\[\]{}/]", r"\\\g<0>", v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    joiners = {"raw": ",", "csv": ",", "pipe": "|", "text": " + "}
    if fmt in joiners:
        return joiners[fmt].join(values)
    if fmt in ("singlequote", "doublequote"):
        q = "'" if fmt == "singlequote" else '"'
        return ",".join(q + v.replace(q, "\\" + q) + q for v in values)
    raise AssertionError(f"the test does not know Grafana's format {fmt!r} (${variable.name})")


def interpolate(expr: str, variables: Mapping[str, Variable], fixed: Mapping[str, str]) -> str:
    """``expr`` with every variable replaced (see the module docstring).

    Raises:
        AssertionError: a variable the dashboard does not define.
    """

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name in fixed:
            return fixed[name]
        assert name in variables, f"${name} in {expr!r} is not a variable of the dashboard"
        variable = variables[name]
        values = variable.values
        if values == [ALL]:
            if variable.all_value is not None and fmt not in ("text", "queryparam"):
                return interpolate(variable.all_value, variables, fixed)
            values = variable.options
        return _format(variable, values, fmt)

    return _VARIABLE.sub(replace, expr)


async def _options(api: PromApi, query: str, start: float, end: float) -> list[str]:
    """The values a query variable's query finds (the Prometheus data source's forms)."""
    window = {"start": f"{start:.3f}", "end": f"{end:.3f}"}
    if m := re.fullmatch(r"\s*label_values\((?:(.+),\s*)?(\w+)\)\s*", query):
        selector, label = m.groups()
        params = {**window, **({"match[]": selector} if selector else {})}
        return [str(v) for v in await api.get(f"label/{label}/values", params)]
    if m := re.fullmatch(r"\s*label_names\(\)\s*", query):
        return [str(v) for v in await api.get("labels", window)]
    if m := re.fullmatch(r"\s*metrics\((.+)\)\s*", query):
        names = await api.get("label/__name__/values", window)
        return [str(n) for n in names if re.search(m.group(1), n)]
    if m := re.fullmatch(r"\s*query_result\((.+)\)\s*", query):
        rows = await api.query(m.group(1), end)
        return [
            "{}{{{}}} {} {}".format(
                s["metric"].get("__name__", ""),
                ", ".join(f'{k}="{v}"' for k, v in s["metric"].items() if k != "__name__"),
                s["value"][1],
                int(float(s["value"][0]) * 1000),
            )
            for s in rows
        ]
    raise AssertionError(f"the test does not know this variable query: {query!r}")


def _apply_regex(options: list[str], regex: str) -> list[str]:
    """A variable's ``regex``: keep matching options; a capture group (or ``value``) extracts."""
    if not regex:
        return options
    m = re.fullmatch(r"/(.*)/([a-z]*)", regex, re.DOTALL)
    source, flags = (m.group(1), m.group(2)) if m else (regex, "")
    source = re.sub(r"\(\?<(?![=!])(\w+)>", r"(?P<\1>", source)  # JavaScript's named groups
    pattern = re.compile(source, re.IGNORECASE if "i" in flags else 0)
    kept: list[str] = []
    for option in options:
        if m := pattern.search(option):
            value = m.groupdict().get("value") or (m.group(1) if m.groups() else option)
            kept.append(value)
    return list(dict.fromkeys(kept))


def _current(var: dict[str, Any]) -> list[str]:
    value = (var.get("current") or {}).get("value")
    if value is None or value == "" or value == []:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


async def resolve_variables(
    doc: Mapping[str, Any], api: PromApi, start: float, end: float, fixed: Mapping[str, str]
) -> dict[str, Variable]:
    """Each variable of the dashboard's templating list: its saved current value, else its
    first option (for a query variable, from Prometheus over the window), in list order (a
    variable's query may use the ones before it)."""
    resolved: dict[str, Variable] = {}
    for var in doc.get("templating", {}).get("list", []):
        kind, query = var.get("type"), var.get("query", "")
        if isinstance(query, dict):
            query = query.get("query", "")
        if kind == "adhoc":
            continue
        if kind == "query":
            query = interpolate(str(query), resolved, fixed)
            options = _apply_regex(await _options(api, query, start, end), var.get("regex", ""))
        elif kind == "datasource":
            options = ["prometheus"]
        elif kind in ("custom", "interval"):
            options = [o.split(" : ")[-1].strip() for o in str(query).split(",") if o.strip()]
        else:  # constant, textbox
            options = [str(query)]
        current = _current(var)
        if current in ([ALL], ["All"]) and var.get("includeAll"):
            current = [ALL]
        values = current if current and (current == [ALL] or kind != "query") else options[:1]
        resolved[var["name"]] = Variable(
            var["name"],
            values,
            options,
            bool(var.get("multi")),
            bool(var.get("includeAll")),
            var.get("allValue") or None,
        )
    return resolved


def labels_used(query: PanelQuery) -> set[str]:
    """The labels the panel shows: ``{{label}}`` in its legend, and the ``by (…)`` labels that
    reach its result (a grouping at the top level, or under functions that keep labels;
    ``le`` goes into ``histogram_quantile``)."""
    used = set(_LEGEND_LABEL.findall(query.legend))
    text = _STRING.sub('""', query.expr)
    for m in _BY.finditer(text):
        if all(call in _KEEPS_LABELS for call in _enclosing_calls(text[: m.start()])):
            used |= {label.strip() for label in m.group(1).split(",") if label.strip()}
    return used - {"le"}


def _enclosing_calls(prefix: str) -> list[str]:
    """The function names of the parentheses still open at the end of ``prefix``: "" for a
    bare parenthesis, "aggregation" for an aggregation's argument (``sum by (a) (`` or
    ``sum(``, which is named ``sum``)."""
    stack: list[str] = []
    after_grouping = False  # just past the ")" of a `by (…)` or `without (…)` list
    for i, char in enumerate(prefix):
        if char == "(":
            name = re.split(r"\W", prefix[:i].rstrip())[-1]  # the word just before, or ""
            stack.append("aggregation" if after_grouping and not name else name)
            after_grouping = False
        elif char == ")":
            after_grouping = bool(stack) and stack.pop() in ("by", "without")
        elif not char.isspace():
            after_grouping = False
    return stack

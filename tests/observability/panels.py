"""The dashboard step of the live Prometheus test: every query of every dashboard in
grafana/dashboards (read now: panels added later are checked too), with its variables
substituted as Grafana would, sent to Prometheus over the whole test so far.

A target that is a range query (Grafana's default, ``"range": true``) is asked with
``/api/v1/query_range`` from Prometheus' start to now at ``$__interval`` steps, as Grafana asks
it for a dashboard showing this window. An instant target (``"instant": true``: a table or stat
of the moment) is asked at the moment ``ChlbReplicaDown`` was seen firing: an operator looking
at the dashboard during the incident (at the end, with nothing firing, "Alerts active for" is
rightly empty). Either must return at least one series, and every series must carry the labels
the panel shows. The instant answer at the end is printed beside them.

The variables take their saved values (All, which is ``.*`` here), and then each takes one
value, the one its label carries in the most answers: every series must then carry that value,
and a panel whose answer with All held series of that value must still show some (a variable
applied to a label the metric does not have would empty it).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import Counter
from collections.abc import Mapping

import aiohttp

from tests.observability.alerting import alert_step
from tests.observability.grafana import (
    PanelQuery,
    PanelWithoutQuery,
    Variable,
    builtins,
    dashboard_queries,
    interpolate,
    labels_used,
    load_dashboards,
    resolve_variables,
    scrape_interval_s,
)
from tests.observability.harness import PromApi, Series
from tests.observability.scenario import Live
from tests.observability.steps import ALERT

# Queries allowed to return no series in this scenario, (dashboard, panel, refId) → why. Keep it
# empty: where a query has nothing to show, make the scenario produce it instead.
ALLOWED_EMPTY: dict[tuple[str, str, str], str] = {}

# dashboard, panel, refId; series: range, instant during the incident, instant at the end,
# range with one value per variable; the largest value shown (a rate that stayed 0 is a series)
Row = tuple[str, str, str, int, int, int, int, float]
Answers = dict[PanelQuery, list[Series]]
# A label matched against a variable in a selector: `replica=~"$replica"`.
_FILTER = re.compile(r'(\w+)\s*(?:=~|!~|=|!=)\s*"[^"]*?\$\{?(\w+)')


def _largest(result: list[Series]) -> float:
    """The largest value in a vector or matrix answer (NaN when empty or all NaN)."""
    values = [float(v) for s in result for _, v in s.get("values", [s.get("value", (0, "NaN"))])]
    return max((v for v in values if not math.isnan(v)), default=math.nan)


def _where(q: PanelQuery) -> str:
    return f"{q.dashboard} / {q.panel} [{q.ref_id}]"


def _label_problems(query: PanelQuery, result: list[Series]) -> list[str]:
    wanted = labels_used(query)
    missing = sorted({label for s in result for label in wanted - set(s["metric"])})
    return [f"{_where(query)}: series without {missing}"] if missing else []


def _filters(expr: str) -> dict[str, set[str]]:
    """Variable name → the labels a selector matches against it."""
    found: dict[str, set[str]] = {}
    for label, name in _FILTER.findall(expr):
        found.setdefault(name, set()).add(label)
    return found


def _one_value_each(
    variables: Mapping[str, Variable], queries: list[PanelQuery], answers: Answers
) -> dict[str, Variable]:
    """Each variable set to the one value its labels carry most often in the answers with
    every value ("All"): the value that exists in the most panels."""
    picked = dict(variables)
    for name, variable in variables.items():
        tally: Counter[str] = Counter()
        for q in queries:
            for label in _filters(q.expr).get(name, set()):
                tally.update(s["metric"][label] for s in answers[q] if label in s["metric"])
        known = [v for v, _ in tally.most_common() if v in variable.options]
        values = known[:1] or variable.options[:1]
        picked[name] = dataclasses.replace(variable, values=values)
    return picked


def _filter_problems(
    q: PanelQuery, picked: Mapping[str, Variable], every: list[Series], one: list[Series]
) -> list[str]:
    """With one value per variable: every series carries it, and a panel whose answer with
    every value showed series of that value shows some."""
    problems, expected = [], False
    for name, labels in _filters(q.expr).items():
        value = picked[name].values[0] if name in picked and picked[name].values else None
        for label in labels:
            wrong = {s["metric"][label] for s in one if s["metric"].get(label, value) != value}
            if wrong:
                problems.append(f"{_where(q)}: ${name}={value!r} answered {label}={wrong}")
            expected |= any(s["metric"].get(label) == value for s in every)
    if expected and not one:
        chosen = {n: picked[n].values for n in _filters(q.expr) if n in picked}
        problems.append(f"{_where(q)}: no series with {chosen}")
    return problems


class Evaluation:
    """The dashboards' queries over one window: ``[start, end]`` for range targets, the
    ``incident`` moment for instant ones."""

    def __init__(self, api: PromApi, start: float, end: float, incident: float) -> None:
        self.api, self.start, self.end, self.incident = api, start, end, incident
        self.fixed = builtins(end - start, scrape_interval_s())
        self.step_s = float(self.fixed["__interval_ms"]) / 1000

    async def shown(
        self, q: PanelQuery, variables: Mapping[str, Variable], at: float | None = None
    ) -> list[Series]:
        """What the panel shows: a range target over the window, an instant one at ``at``
        (the incident by default)."""
        expr = interpolate(q.expr, variables, self.fixed)
        if q.instant or at is not None:
            return await self.api.query(expr, self.incident if at is None else at)
        return await self.api.query_range(expr, self.start, self.end, self.step_s)

    async def row(
        self,
        q: PanelQuery,
        every: list[Series],
        one: list[Series],
        variables: Mapping[str, Variable],
    ) -> Row:
        ranged = (
            every
            if not q.instant
            else await self.shown(dataclasses.replace(q, instant=False), variables)
        )
        during = await self.shown(q, variables, self.incident)
        at_end = await self.shown(q, variables, self.end)
        counts = (len(ranged), len(during), len(at_end), len(one))
        return (q.dashboard, q.panel, q.ref_id, *counts, _largest(every))


async def _notes(api: PromApi, others: list[PanelWithoutQuery], ev: Evaluation) -> list[str]:
    rules = [r for r in await api.rules() if r.get("type") == "alerting"]
    notes = [
        f"{p.dashboard} / {p.panel}: {p.kind} panel without PromQL"
        + (f" (Prometheus has {len(rules)} alerting rules)" if p.kind == "alertlist" else "")
        for p in others
        if p.kind != "row"
    ]
    notes.append(f"range: {ev.end - ev.start:.0f}s from Prometheus' start, step {ev.step_s:g}s")
    notes.append(f"incident: {ev.end - ev.incident:.0f}s before the end; {ev.fixed}")
    return notes


async def panels_step(
    live: Live, s: aiohttp.ClientSession
) -> tuple[list[Row], list[str], list[str]]:
    async def run() -> tuple[list[Row], list[str], list[str]]:
        incident = (await alert_step(live, s))[0].wall(f"{ALERT} firing")
        api = live.api(s)
        dashboards = load_dashboards()
        queries, others = dashboard_queries(dashboards)
        assert queries, "no Prometheus query in grafana/dashboards"
        ev = Evaluation(api, live.prometheus.started_at, time.time(), incident)
        variables = {
            title: await resolve_variables(doc, api, ev.start, ev.end, ev.fixed)
            for title, doc in dashboards.items()
        }
        every = {q: await ev.shown(q, variables[q.dashboard]) for q in queries}
        picked = {
            title: _one_value_each(
                variables[title], [q for q in queries if q.dashboard == title], every
            )
            for title in dashboards
        }
        rows: list[Row] = []
        problems: list[str] = []
        for q in queries:
            one = await ev.shown(q, picked[q.dashboard])
            rows.append(await ev.row(q, every[q], one, variables[q.dashboard]))
            if not every[q] and (q.dashboard, q.panel, q.ref_id) not in ALLOWED_EMPTY:
                problems.append(f"{_where(q)}: no series for {q.expr}")
            problems += _label_problems(q, every[q])
            problems += _filter_problems(q, picked[q.dashboard], every[q], one)
        notes = await _notes(api, others, ev)
        notes += [
            f"one value each, {title}: " + ", ".join(f"${n}={v.values}" for n, v in chosen.items())
            for title, chosen in picked.items()
        ]
        return rows, problems, notes

    return await live.once("panels", run)  # type: ignore[no-any-return]

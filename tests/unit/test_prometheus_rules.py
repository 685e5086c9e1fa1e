"""The Prometheus rules (infra/prometheus/rules) are valid, tested, documented and loaded, and
they read the metric and label names the balancer really exports.

``promtool`` (``PROMTOOL`` or the PATH, as in ``tests/unit/test_dashboards.py``; skipped when
absent, CI has it) checks the rule files and runs their unit tests,
``infra/prometheus/rules/tests/*.yml``. The rest needs no promtool: every alert has a test case
where it fires and one where it does not, follows the names fixed for issue 17, and has a
section in the runbook, ``docs/operations.md``, whose anchor is its ``runbook_url``; every
recording rule is evaluated by a test; both ``prometheus.yml`` load the rules and the deployments
put them where ``rule_files`` looks; and a live scrape of an in-process balancer exports the
series and labels the rules select.
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

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BalancerFactory, eventually

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "prometheus" / "rules"
ALERTS = RULES / "chlb-alerts.yml"
RECORDING = RULES / "chlb-recording.yml"
RULE_TESTS = sorted((RULES / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "operations.md"
DASHBOARDS = ROOT / "grafana" / "dashboards"
CONFIGS = [
    ROOT / "infra" / "prometheus" / "prometheus.yml",
    ROOT / "infra" / "swarm" / "prometheus.yml",
]

# The names fixed in advance for issue 17.
ALERT_NAMES = {
    "ChlbReplicaDown", "ChlbReplicasBelowDesired", "ChlbNoLeader", "ChlbMultipleLeaders",
    "ChlbRingFingerprintMismatch", "ChlbStateStoreUnreachable", "ChlbHigh5xxRatio",
    "ChlbRetryBudgetExhausted", "ChlbHotReplica", "ChlbBalancerDown",
}  # fmt: skip

# Every lb_* series the rules select, with the label names they rely on (besides the target's
# job and instance). A renamed metric or label must fail here, not leave an alert silent.
SELECTED = {
    "lb_upstream_responses_total": {"replica", "code"},
    "lb_balancer_errors_total": {"code"},
    "lb_retry_budget_exhausted_total": set(),
    "lb_replica_keyspace_share": {"replica"},
    "lb_replica_up": {"replica"},
    "lb_replicas_desired": set(),
    "lb_ring_members": set(),
    "lb_leader": set(),
    "lb_ring_info": {"algorithm", "fingerprint"},
    "lb_state_store_up": set(),
}


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path
    return doc


def rules_of(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load(path)["groups"] for rule in group["rules"]]


def alert_rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules_of(ALERTS)}


def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        pytest.skip("promtool not installed (set PROMTOOL or put it on PATH)")
    return found


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_accepts_the_rule_files() -> None:
    checked = run(promtool(), "check", "rules", str(ALERTS), str(RECORDING))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, f"no rule tests in {RULES / 'tests'}"
    tested = run(promtool(), "test", "rules", *map(str, RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_both_configs_load_both_rule_files(tmp_path: Path) -> None:
    """Each prometheus.yml beside a copy of the rules directory, as the deployments place it."""
    tool = promtool()
    for config in CONFIGS:
        where = tmp_path / config.parent.name
        shutil.copytree(RULES, where / "rules")
        shutil.copy(config, where / "prometheus.yml")
        checked = run(tool, "check", "config", str(where / "prometheus.yml"))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        for name in (ALERTS.name, RECORDING.name):
            assert f"rules/{name}" in checked.stdout, (config, checked.stdout)


def test_the_alerts_follow_the_conventions() -> None:
    groups = load(ALERTS)["groups"]
    assert [g["name"] for g in groups] == ["chlb"]
    alerts = alert_rules()
    assert set(alerts) == ALERT_NAMES
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"page", "warning"}, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["runbook_url"] == f"docs/operations.md#{name.lower()}", name
        assert "for" in rule, name
    for rule in rules_of(RECORDING):
        assert re.fullmatch(r"chlb:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def cases() -> list[tuple[str, str, bool]]:
    """(test file, alert name, fires) of every alert_rule_test case."""
    found = []
    for path in RULE_TESTS:
        for test in load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                found.append((path.name, case["alertname"], bool(case.get("exp_alerts"))))
    return found


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    seen = cases()
    for name in ALERT_NAMES:
        outcomes = {fires for _, alert, fires in seen if alert == name}
        assert outcomes == {True, False}, f"{name}: tested firing/not firing: {outcomes}"
    assert {alert for _, alert, _ in seen} <= ALERT_NAMES


def test_every_recording_rule_is_evaluated_by_a_test() -> None:
    exprs = " ".join(
        case["expr"]
        for path in RULE_TESTS
        for test in load(path)["tests"]
        for case in test.get("promql_expr_test", [])
    )
    for rule in rules_of(RECORDING):
        assert re.search(rf"{re.escape(rule['record'])}(?![\w:])", exprs), rule["record"]


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_alert_has_a_runbook_section() -> None:
    text = RUNBOOK.read_text()
    found = anchors(text)
    for name, rule in alert_rules().items():
        anchor = rule["annotations"]["runbook_url"].partition("#")[2]
        assert anchor in found, f"{name}: no section #{anchor} in {RUNBOOK.name}"
        section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**Meaning.**", "**Likely causes.**", "**Check.**", "**Act.**"):
            assert part in section, f"{name}: no {part}"
    for link in re.findall(r"\]\(#([\w-]+)\)", text):
        assert link in found, f"a link to #{link}, which is no section"


def test_the_panels_the_runbook_names_exist() -> None:
    titles = {
        panel["title"]
        for board in DASHBOARDS.glob("*.json")
        for top in json.loads(board.read_text())["panels"]
        for panel in [top, *top.get("panels", [])]  # a collapsed row holds its panels
    }
    text = RUNBOOK.read_text()  # "panel **A**", "panels **A**, **B** and **C**"
    found = re.findall(r"panels?\s+\*\*([^*]+)\*\*", text)
    found += re.findall(r"(?:,|\band)\s+\*\*([^*]+)\*\*", text)
    named = {" ".join(name.split()) for name in found}
    assert named, "the runbook names no panel"
    assert named <= titles, f"panels that no dashboard has: {sorted(named - titles)}"


def test_the_deployments_put_the_rules_where_rule_files_looks() -> None:
    for config in CONFIGS:
        assert load(config)["rule_files"] == ["rules/*.yml"], config
    compose = load(ROOT / "docker-compose.yml")["services"]["prometheus"]
    mounts = dict(v.split(":")[:2] for v in compose["volumes"])
    assert mounts["./infra/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./infra/prometheus/rules"] == "/etc/prometheus/rules"
    swarm = load(ROOT / "infra" / "swarm" / "observability.yml")
    files = {
        name: (ROOT / "infra" / "swarm" / c["file"]).resolve()
        for name, c in swarm["configs"].items()
    }
    targets = {files[c["source"]]: c["target"] for c in swarm["services"]["prometheus"]["configs"]}
    for path in (ALERTS, RECORDING):
        assert targets[path.resolve()] == f"/etc/prometheus/rules/{path.name}"
    for job in ("balancers",):  # the job ChlbBalancerDown names
        for config in CONFIGS:
            assert job in {j["job_name"] for j in load(config)["scrape_configs"]}, config


def test_the_rules_select_only_the_series_listed_here() -> None:
    exprs = " ".join(rule["expr"] for path in (ALERTS, RECORDING) for rule in rules_of(path))
    assert set(re.findall(r"\blb_[a-z_]+", exprs)) == set(SELECTED)


async def scrape_after_traffic(make_balancer: BalancerFactory) -> dict[str, list[dict[str, str]]]:
    """Each series name of a balancer's /metrics (after traffic, a balancer's own 400 and an
    announcer round), with the label sets of its samples."""
    lb = await make_balancer()
    for i in range(30):
        async with lb.client.get("/home", params={"id": str(i)}) as resp:
            await resp.read()
    async with lb.client.get("/nope") as resp:  # a replica's 4xx
        await resp.read()
    reader, writer = await asyncio.open_connection("127.0.0.1", lb.service.port)
    writer.write(b"NOT HTTP\r\n\r\n")  # the balancer's own 400
    assert (await reader.read()).startswith(b"HTTP/1.1 400")
    writer.close()
    await writer.wait_closed()
    found: dict[str, list[dict[str, str]]] = {}

    async def complete() -> bool:  # shares are computed after the first scrape
        found.clear()
        async with lb.client.get("/metrics") as resp:
            for family in text_string_to_metric_families(await resp.text()):
                for s in family.samples:
                    found.setdefault(s.name, []).append(dict(s.labels))
        return set(SELECTED) <= set(found)

    await eventually(complete)
    return found


async def test_a_live_scrape_has_the_series_and_labels_the_rules_use(
    make_balancer: BalancerFactory,
) -> None:
    found = await scrape_after_traffic(make_balancer)
    for name, labels in SELECTED.items():
        assert {frozenset(s) for s in found[name]} == {frozenset(labels)}, name
    # The rules' code=~"5.." matches both kinds of code: a replica's status class ("5xx") and
    # the status the balancer answered itself ("503"). Every code is exported from the start, at
    # 0 until it happens (so rate() sees a first burst).
    classes = {s["code"] for s in found["lb_upstream_responses_total"]}
    assert classes == {"1xx", "2xx", "3xx", "4xx", "5xx"}
    codes = {s["code"] for s in found["lb_balancer_errors_total"]}
    assert {"400", "502", "503", "504"} <= codes
    assert all(re.fullmatch(r"[1-5](xx|\d\d)", code) for code in classes | codes)

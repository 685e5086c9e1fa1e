"""The steps of the live Prometheus test (see test_prometheus_live.py's docstring), each run
once per module through ``Live.once`` and after the steps before it, so any one test can run
alone. Each returns what it measured; the checks that need no figures printed first fail
here, the others in the tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from tests.observability.scenario import (
    SLACK_S,
    Live,
    drive,
    leader_status,
    malformed,
)
from tests.support.cluster import Json, Load, call, replica_processes, wait_converged

ALERT = "ChlbReplicaDown"
PLAN = {"lb-1": 600, "lb-2": 400}  # GET /home per instance: unequal, so a swap shows
MALFORMED = {"lb-1": 3, "lb-2": 2}  # requests the balancer answers 400 itself
ADDED = "Obs1"


def _mismatch(targets: Sequence[Json], live: Live, ring: Sequence[Json]) -> str | None:
    """Why Prometheus' active targets are not both balancers and exactly ``ring``, all up."""
    balancers = {
        t["labels"]["instance"]: t["health"] for t in targets if t["labels"]["job"] == "balancers"
    }
    if balancers != dict.fromkeys(live.addresses, "up"):
        return f"balancers {balancers}"
    replicas = {
        t["labels"].get("replica"): (t["labels"]["instance"], t["scrapeUrl"], t["health"])
        for t in targets
        if t["labels"]["job"] == "replicas"
    }
    expected = {r["name"]: (r["name"], f"http://{r['address']}/metrics", "up") for r in ring}
    return None if replicas == expected else f"replicas {replicas}, ring {expected}"


async def await_targets(
    live: Live, s: aiohttp.ClientSession, ring: Sequence[Json], timeout_s: float
) -> float:
    """Seconds until Prometheus scrapes exactly the balancers and ``ring``, all up."""
    started = time.monotonic()
    why = "not asked yet"
    while time.monotonic() - started < timeout_s:
        why = _mismatch(await live.api(s).active_targets(), live, ring) or ""
        if not why:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise AssertionError(f"targets did not match within {timeout_s:.0f}s: {why}")


def _discovery_timeout_s(live: Live) -> float:
    t = live.timing
    return t.sd_refresh_s + 2 * t.scrape_s + t.scrape_timeout_s + SLACK_S


async def discovery_step(live: Live, s: aiohttp.ClientSession) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        ring = (await leader_status(s, live.cluster))["replicas"]
        took = await await_targets(live, s, ring, _discovery_timeout_s(live))
        names = ", ".join(r["name"] for r in ring)
        return {"summary": f"2 balancers and {names} up as job replicas {took:.1f}s after start"}

    return await live.once("discovery", run)  # type: ignore[no-any-return]


async def _by(
    live: Live, s: aiohttp.ClientSession, expr: str, label: str, at: float
) -> dict[str, float]:
    """``{label value: value}`` of an instant query (label values mapped for instances)."""
    result = await live.api(s).query(expr, at)
    out = {}
    for series in result:
        key = series["metric"].get(label, "")
        out[live.addresses[key].name if key in live.addresses else key] = float(series["value"][1])
    return out


async def _scraped_after(live: Live, s: aiohttp.ClientSession, after: float) -> float:
    """A moment by which Prometheus has scraped every target (``up``) after ``after``."""
    deadline = time.monotonic() + 2 * live.timing.scrape_s + live.timing.scrape_timeout_s + 5
    while time.monotonic() < deadline:
        now = time.time()
        oldest = await live.api(s).scalar("min(timestamp(up))", now)
        if oldest is not None and oldest > after:
            return now
        await asyncio.sleep(0.5)
    raise AssertionError("Prometheus did not scrape every target after the load in time")


_LB = '{job="balancers"}'
_HOME = '{job="replicas",path="/home"}'
COUNT_QUERIES = {  # name → (expr, the label it is summed by)
    "responses per instance": (f"lb_upstream_responses_total{_LB}", "instance"),
    "2xx per instance": ('lb_upstream_responses_total{job="balancers",code="2xx"}', "instance"),
    "latency count per instance": (f"lb_upstream_latency_seconds_count{_LB}", "instance"),
    "responses per replica (balancers)": (f"lb_upstream_responses_total{_LB}", "replica"),
    "/home per replica (replicas)": (f"server_requests_total{_HOME}", "replica"),
    "400 per instance": ('lb_balancer_errors_total{job="balancers",code="400"}', "instance"),
}  # fmt: skip


async def counts_step(live: Live, s: aiohttp.ClientSession) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        await discovery_step(live, s)
        ring = (await leader_status(s, live.cluster))["replicas"]
        by_name = {i.name: i for i in live.cluster.instances}
        sent = await drive(s, {by_name[n]: c for n, c in PLAN.items()})
        assert not sent.failures, sent.failures[:5]
        assert dict(sent.per_instance) == PLAN, "the load did not finish in time"
        for name, count in MALFORMED.items():
            answers = await malformed(by_name[name], count)
            assert all(a.startswith(b"HTTP/1.1 400") for a in answers), answers
        ended = time.time()
        at = await _scraped_after(live, s, ended)
        ids = {r["server_id"]: r["name"] for r in ring}
        per_replica = {ids[k]: float(v) for k, v in sent.per_replica.items()}
        per_instance = {k: float(v) for k, v in sent.per_instance.items()}
        expected = {
            "responses per instance": per_instance,
            "2xx per instance": per_instance,
            "latency count per instance": per_instance,
            "responses per replica (balancers)": per_replica,
            "/home per replica (replicas)": per_replica,
            "400 per instance": {k: float(v) for k, v in MALFORMED.items()},
        }
        checks: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        lines = [f"sent {dict(sent.per_instance)}, answered by {dict(per_replica)}"]
        for name, (expr, label) in COUNT_QUERIES.items():
            before = await _by(live, s, f"sum by ({label}) ({expr})", label, sent.started_at)
            after = await _by(live, s, f"sum by ({label}) ({expr})", label, at)
            increase = {k: v - before.get(k, 0.0) for k, v in after.items()}
            checks[name] = (increase, expected[name])
            lines.append(f"{name}: {increase} (sent {expected[name]})")
        return {"checks": checks, "lines": lines}

    return await live.once("counts", run)  # type: ignore[no-any-return]


async def _replaced(s: aiohttp.ClientSession, live: Live, gone: str, timeout_s: float) -> float:
    """Seconds until every instance agrees on 3 live replicas without ``gone``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        _, statuses = await wait_converged(s, live.cluster.instances, timeout_s)
        if gone not in {r["name"] for r in statuses[0]["replicas"]}:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{gone} was not replaced within {timeout_s}s")


async def _change(s: aiohttp.ClientSession, url: str, method: str, body: Json) -> None:
    code, answer = await call(s, method, url, body)
    assert code == 200, (url, body, code, answer)


async def faults_step(live: Live, s: aiohttp.ClientSession) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        await counts_step(live, s)
        lb1, lb2 = live.cluster.instances
        victim = (await leader_status(s, live.cluster))["replicas"][0]
        assert victim["pid"] in replica_processes(live.cluster.tag)  # ours: safe to signal
        load = Load(live.cluster.instances, clients=8, max_requests=20_000)
        traffic = asyncio.create_task(load.run(s, duration_s=5.0))
        await asyncio.sleep(1.5)
        os.kill(victim["pid"], signal.SIGKILL)
        replaced_s = await _replaced(s, live, victim["name"], 15.0)
        await traffic
        await _change(s, f"{lb2.url}/add", "POST", {"n": 1, "hostnames": [ADDED]})
        await wait_converged(s, live.cluster.instances, 15.0, replicas=4)
        ring = (await leader_status(s, live.cluster))["replicas"]
        removed = next(r["name"] for r in ring if r["name"] != ADDED)
        await _change(s, f"{lb1.url}/rm", "DELETE", {"n": 1, "hostnames": [removed]})
        changed = time.monotonic()
        _, statuses = await wait_converged(s, live.cluster.instances, 15.0, replicas=3)
        after = await drive(s, {lb1: 150, lb2: 150}, first_id=100_000)
        assert not after.failures, after.failures[:5]
        await await_targets(live, s, statuses[0]["replicas"], _discovery_timeout_s(live))
        discovered = time.monotonic() - changed
        return {
            "lines": [
                f"SIGKILL {victim['name']} under load: replaced in {replaced_s:.2f}s; "
                f"{load.sent} requests, {len(load.failures)} failed",
                f"/add {ADDED} via lb-2, /rm {removed} via lb-1: ring now "
                + ", ".join(r["name"] for r in statuses[0]["replicas"]),
                f"Prometheus scrapes exactly that ring {discovered:.1f}s after the /rm",
            ],
        }

    return await live.once("faults", run)  # type: ignore[no-any-return]

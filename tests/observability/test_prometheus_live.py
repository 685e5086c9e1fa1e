"""A real Prometheus, on the repository's own infra/prometheus/prometheus.yml (only its
``host:port`` strings changed) and rules, scraping a real cluster: Redis, two balancer
processes and their replica processes.

In order, on one cluster and one Prometheus for the module (each step runs once, whichever test
needs it first): discovery finds both balancers and every ring member; exact request counts
sent per instance show up, equal, in the balancers' and the replicas' counters; a replica is
SIGKILLed under load, one is added and one removed, and discovery follows; a replica is
SIGSTOPped (hung: DOWN, but its process runs, so the balancers wait ``replace_after_s``, set
here from the alert's ``for:`` and the intervals, before replacing it) and ``ChlbReplicaDown``
goes pending, firing, and resolves after the replacement (the requests in flight on it when it
stopped fail: 504 after ``upstream_timeout_s``, 2 s here); then every query of every dashboard
in grafana/dashboards returns series carrying the labels its panel shows. Each test prints its
figures (``pytest -s``). Needs redis-server and prometheus (``$PROMETHEUS`` or the PATH; with
``CHLB_REQUIRE_PROMETHEUS=1``, as ``.ci/run`` sets, a missing binary fails the tests).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.observability.alerting import alert_step
from tests.observability.harness import (
    COMPOSE_HOSTS,
    CONFIG,
    REQUIRE_ENV,
    PrometheusProcess,
    alert_rules,
    duration_s,
    intervals,
    prometheus_binary,
    render_config,
)
from tests.observability.panels import panels_step
from tests.observability.scenario import AlertBounds, Live
from tests.observability.steps import ALERT, counts_step, discovery_step, faults_step
from tests.support.cluster import running_cluster, session
from tests.support.redis_process import redis_binary

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        redis_binary() is None, reason="needs the redis-server binary (CI installs it)"
    ),
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    binary = prometheus_binary()
    if binary is None:
        why = "needs the prometheus binary ($PROMETHEUS, or prometheus on the PATH)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1, but {why}")
        pytest.skip(why)
    workdir = tmp_path_factory.mktemp("observability")
    timing = intervals(CONFIG.read_text())
    rule = alert_rules().get(ALERT, {})
    bounds = AlertBounds.of(timing, duration_s(rule.get("for", "0s")))
    # A hung replica stays DOWN in the ring for grace_s before it is replaced; a request in
    # flight on it fails (504) after 2 s, not the default 30 s.
    args = ("--replace-after-s", f"{bounds.grace_s:g}", "--upstream-timeout-s", "2")
    with running_cluster(workdir, 2, persistent=False, args=args) as cluster:
        pairs = zip(COMPOSE_HOSTS, cluster.instances, strict=True)
        config = render_config(workdir / "prometheus", {h: f"127.0.0.1:{i.port}" for h, i in pairs})
        prometheus = PrometheusProcess(binary, config, workdir / "prometheus")
        try:
            prometheus.wait_ready()
            addresses = {f"127.0.0.1:{i.port}": i for i in cluster.instances}
            yield Live(cluster, prometheus, timing, bounds, addresses)
        except BaseException:
            print(f"--- prometheus ---\n{prometheus.tail()}\n{cluster.logs()}")
            raise
        finally:
            prometheus.stop()


@pytest.fixture
async def s() -> AsyncIterator[aiohttp.ClientSession]:
    async with session(limit=64) as client:
        yield client


async def test_discovery_lists_both_balancers_and_every_ring_member(
    live: Live, s: aiohttp.ClientSession
) -> None:
    found = await discovery_step(live, s)
    print(f"\n[discovery] {found['summary']}")


async def test_counts_in_prometheus_equal_the_requests_sent(
    live: Live, s: aiohttp.ClientSession
) -> None:
    counts = await counts_step(live, s)
    for line in counts["lines"]:
        print(f"[counts] {line}")
    for name, (measured, expected) in counts["checks"].items():
        assert measured == expected, f"{name}: Prometheus {measured}, the test sent {expected}"


async def test_discovery_follows_a_kill_an_add_and_a_rm(
    live: Live, s: aiohttp.ClientSession
) -> None:
    faults = await faults_step(live, s)
    for line in faults["lines"]:
        print(f"[faults] {line}")


@pytest.mark.timeout(240)
async def test_replica_down_fires_and_resolves_after_the_replacement(
    live: Live, s: aiohttp.ClientSession
) -> None:
    assert ALERT in alert_rules(), f"no alerting rule {ALERT} in infra/prometheus/rules"
    timeline, checks, notes = await alert_step(live, s)
    print(f"\n[alert] {ALERT} timeline (replace_after_s={live.bounds.grace_s:g}):")
    for line in [
        *timeline.lines(),
        *notes,
        *(f"{'ok' if ok else 'FAILED'}: {w}" for w, ok in checks),
    ]:
        print(f"[alert]   {line}")
    failed = [why for why, ok in checks if not ok]
    assert not failed, failed


@pytest.mark.timeout(240)
async def test_every_dashboard_query_returns_series_with_its_labels(
    live: Live, s: aiohttp.ClientSession
) -> None:
    rows, problems, notes = await panels_step(live, s)
    width = max(len(f"{r[0]} / {r[1]}") for r in rows)
    print(f"\n{'dashboard / panel':<{width}}  ref  series: range  incident  end  one value  max")
    for dashboard, panel, ref, ranged, during, at_end, one, top in rows:
        where = f"{dashboard} / {panel}"
        counts = f"{ranged:>13}  {during:>8}  {at_end:>3}  {one:>9}"
        print(f"{where:<{width}}  {ref:<3}  {counts}  {top:.4g}")
    for line in notes:
        print(line)
    assert not problems, "\n".join(problems)

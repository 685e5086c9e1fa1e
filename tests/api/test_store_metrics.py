"""``lb_state_store_up`` and ``lb_replicas_desired`` (``balancer.api.metrics``): what the alerts
``ChlbStateStoreUnreachable`` and ``ChlbReplicasBelowDesired`` read
(``infra/prometheus/rules/chlb-alerts.yml``).

The store is an in-memory one that answers ``StoreUnavailable`` while the test says it is down
(what ``RedisStore`` raises for every Redis failure). Not fakeredis behind a whole service: a
redis-py or fakeredis call cancelled at shutdown can swallow the ``CancelledError``
(redis/redis-py#2028), and ``BalancerService.stop`` then waits on its health monitor forever.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import prometheus_client

from balancer.api.metrics import Liveness, TrafficCollector
from balancer.app import BalancerService
from balancer.config import Settings
from balancer.errors import StoreUnavailable
from balancer.http.stats import TrafficStats
from balancer.state.coordination import Leadership
from balancer.state.memory import InMemoryStore
from tests.api.test_metrics import Follower, NeverLeads, parse, ring_of, scrape, value
from tests.conftest import FAST, Balancer, eventually
from tests.support.runtime import InProcessRuntime


class Flaky(InMemoryStore):
    """An in-memory store that fails like an unreachable Redis: every write and liveness read
    while ``down``, the liveness read alone while ``unreadable``."""

    down = False
    unreadable = False

    async def announce(self, instance_id: str, info: dict[str, Any], ttl_s: float) -> None:
        if self.down:
            raise StoreUnavailable("down")
        await super().announce(instance_id, info, ttl_s)

    async def alive(self) -> frozenset[str]:
        if self.down or self.unreadable:
            raise StoreUnavailable("down")
        return await super().alive()


@contextlib.asynccontextmanager
async def serving(store: Flaky, leadership: Leadership | None = None) -> AsyncIterator[Balancer]:
    settings = Settings.from_flat(port=0, **FAST)
    runtime = InProcessRuntime()
    service = BalancerService(settings, store=store, runtime=runtime, leadership=leadership)
    await service.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{service.port}") as client:
            yield Balancer(client, service, store, runtime, settings)
    finally:
        await service.stop()


async def store_up_is(lb: Balancer, expected: float) -> bool:
    return value(await scrape(lb), "lb_state_store_up") == expected


async def test_a_store_outage_flips_lb_state_store_up() -> None:
    store = Flaky()
    async with serving(store) as lb:
        await eventually(lambda: store_up_is(lb, 1.0))
        assert value(await scrape(lb), "lb_replicas_desired") == 3
        store.down = True  # the announcer's next write fails
        took_s = await eventually(lambda: store_up_is(lb, 0.0))
        samples = await scrape(lb)
        assert value(samples, "lb_replicas_desired") == 3  # the last N this instance knew
        assert value(samples, "lb_ring_members") == 3  # and it still routes on its ring
        store.down = False
        await eventually(lambda: store_up_is(lb, 1.0))
    assert took_s < 3.0  # the announcer runs once a second (``_ANNOUNCE_EVERY_S``)


async def test_a_followers_failed_liveness_read_counts_as_the_store_down() -> None:
    store = Flaky()
    async with serving(store) as leader, serving(store, NeverLeads()) as follower:

        async def both_up() -> bool:
            return await store_up_is(leader, 1.0) and await store_up_is(follower, 1.0)

        await eventually(both_up)
        store.unreadable = True  # announcements still land

        async def follower_down() -> bool:  # it reads liveness keys each second; the leader,
            # whose probes cover every member, reads none
            return await store_up_is(follower, 0.0) and await store_up_is(leader, 1.0)

        await eventually(follower_down)


async def test_add_and_rm_move_lb_replicas_desired() -> None:
    async with serving(Flaky()) as lb:
        assert value(await scrape(lb), "lb_replicas_desired") == 3
        async with lb.client.post("/add", json={"n": 2}) as resp:
            assert resp.status == 200, await resp.text()
        samples = await scrape(lb)
        assert value(samples, "lb_replicas_desired") == 5
        assert value(samples, "lb_ring_members") == 5
        async with lb.client.delete("/rm", json={"n": 1}) as resp:
            assert resp.status == 200, await resp.text()
        assert value(await scrape(lb), "lb_replicas_desired") == 4


async def test_no_desired_n_before_one_is_stored() -> None:
    store = InMemoryStore()
    view = await ring_of(store, ["a", "b"])  # committed without a target N
    collector = TrafficCollector(TrafficStats(), view, Liveness(view, Follower()))

    def collected(name: str) -> float | None:
        registry = prometheus_client.CollectorRegistry()
        registry.register(collector)
        return value(parse(prometheus_client.generate_latest(registry).decode()), name)

    assert collected("lb_replicas_desired") is None
    assert collected("lb_state_store_up") is None  # no announcer round yet
    replicas = (await store.membership()).replicas
    assert await store.commit(replicas, expected_epoch=1, target=2) is not None
    await view.refresh()
    assert collected("lb_replicas_desired") == 2
    assert collected("lb_ring_members") == 2

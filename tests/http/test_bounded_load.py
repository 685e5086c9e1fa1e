"""Bounded loads on the real data path: a hot key's owner holds at most its cap of concurrent
requests, the rest spill to the key's next replicas and are counted; with the factor at 0 the
owner takes everything."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import pytest

from balancer.http.upstream import UpstreamConn
from tests.conftest import Balancer, BalancerFactory, eventually
from tests.http.conftest import frontend, owner, raw_balancer, server_ids
from tests.http.replicas import ok, requests

CONCURRENT = 30
REPLICAS = 3
HOLD_S = 0.4  # long enough for every request to be in flight at once


@dataclass
class Concurrency:
    """A raw replica handler that holds each request ``HOLD_S`` and records, per server id,
    how many requests it held at once."""

    now: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)

    async def __call__(
        self, server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        async for _req in requests(r, w):
            self.now[server_id] += 1
            self.peak[server_id] = max(self.peak[server_id], self.now[server_id])
            try:
                await asyncio.sleep(HOLD_S)
            finally:
                self.now[server_id] -= 1
            w.write(ok(server_id.encode()))


async def _hot_burst(lb: Balancer) -> Counter[str]:
    """CONCURRENT requests for one key at once; server id → requests it answered."""

    async def one() -> str:
        async with lb.client.get("/work?id=hot") as resp:
            assert resp.status == 200
            return await resp.text()

    answers = await asyncio.gather(*(one() for _ in range(CONCURRENT)))
    return Counter(answers)


async def _settled(lb: Balancer) -> None:
    """Every request's load was released: per replica and in total."""
    stats = frontend(lb).stats

    async def released() -> bool:
        busy = [(st.in_flight, st.connecting) for st in stats.replicas.values()]
        return stats.load == 0 and all(b == (0, 0) for b in busy)

    await eventually(released, timeout_s=5.0)


async def test_hot_key_owner_never_exceeds_the_cap(make_balancer: BalancerFactory) -> None:
    handler = Concurrency()
    lb, _ = await raw_balancer(make_balancer, handler, replicas=REPLICAS, balance_factor=1.25)
    assert frontend(lb).balance_factor == 1.25
    hot = owner(lb, "hot")
    ids = await server_ids(lb)
    cap = math.ceil(1.25 * CONCURRENT / REPLICAS)  # the cap when all of them are in flight

    answered = await _hot_burst(lb)

    assert handler.peak[ids[hot]] <= cap, (handler.peak, cap)
    assert answered[ids[hot]] <= cap
    spilled = CONCURRENT - answered[ids[hot]]
    assert spilled >= CONCURRENT - cap > 0
    stats = frontend(lb).stats
    assert stats.replicas[hot].spills == spilled
    assert sum(st.spills for st in stats.replicas.values()) == spilled  # counted on the owner
    # The spills went to the key's next replica first: it got more than the last one.
    second, third = frontend(lb).view.current.ring.candidates("hot", 3)[1:]
    assert answered[ids[second]] >= answered[ids[third]]
    await _settled(lb)

    async with lb.client.get("/metrics") as resp:
        text = await resp.text()
    assert f'lb_bounded_load_spills_total{{replica="{hot}"}} {float(spilled)}' in text


async def test_without_a_factor_the_owner_takes_the_whole_burst(
    make_balancer: BalancerFactory,
) -> None:
    handler = Concurrency()
    lb, _ = await raw_balancer(make_balancer, handler, replicas=REPLICAS)
    assert frontend(lb).balance_factor == 0.0
    hot = owner(lb, "hot")
    ids = await server_ids(lb)

    answered = await _hot_burst(lb)

    assert answered == Counter({ids[hot]: CONCURRENT})
    assert handler.peak[ids[hot]] > math.ceil(1.25 * CONCURRENT / REPLICAS)  # the test can fail
    assert all(st.spills == 0 for st in frontend(lb).stats.replicas.values())
    await _settled(lb)


async def test_connecting_requests_count_and_are_released_when_clients_vanish(
    make_balancer: BalancerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests still waiting for their upstream connection count against the cap (else a burst
    on a cold pool would all go to the owner), and clients that give up while they wait leave no
    load behind."""
    handler = Concurrency()
    lb, _ = await raw_balancer(make_balancer, handler, replicas=REPLICAS, balance_factor=1.25)
    hot = owner(lb, "hot")
    fe = frontend(lb)
    real_connect = fe.pool.connect

    async def slow_connect(address: str) -> UpstreamConn:
        await asyncio.sleep(1.0)  # outlasts the clients below
        return await real_connect(address)

    monkeypatch.setattr(fe.pool, "connect", slow_connect)
    timeout = aiohttp.ClientTimeout(total=0.6)
    async with aiohttp.ClientSession(lb.url, timeout=timeout) as impatient:

        async def one() -> None:
            with contextlib.suppress(TimeoutError):
                async with impatient.get("/work?id=hot") as resp:
                    await resp.read()

        burst = asyncio.gather(*(one() for _ in range(CONCURRENT)))

        async def all_connecting() -> bool:
            return fe.stats.load == CONCURRENT

        await eventually(all_connecting, timeout_s=0.5)
        hot_stats = fe.stats.replicas[hot]
        assert (hot_stats.in_flight, hot_stats.connecting) == (0, cap_for(CONCURRENT))
        assert hot_stats.spills == CONCURRENT - cap_for(CONCURRENT)
        await burst
    await _settled(lb)
    assert not handler.peak  # no request reached a replica
    monkeypatch.undo()
    assert sum((await _hot_burst(lb)).values()) == CONCURRENT  # and the balancer still routes


def cap_for(placed: int) -> int:
    """How many of ``placed`` simultaneous hot-key requests the owner gets with c = 1.25."""
    taken = 0
    for total in range(placed):
        if taken < math.ceil(1.25 * (total + 1) / REPLICAS):
            taken += 1
    return taken


async def test_in_flight_requests_are_released_when_clients_vanish(
    make_balancer: BalancerFactory,
) -> None:
    handler = Concurrency()
    lb, _ = await raw_balancer(make_balancer, handler, replicas=REPLICAS, balance_factor=1.25)
    fe = frontend(lb)
    async with aiohttp.ClientSession(lb.url, timeout=aiohttp.ClientTimeout(total=0.2)) as impatient:

        async def one() -> None:
            with contextlib.suppress(TimeoutError):
                async with impatient.get("/work?id=hot") as resp:
                    await resp.read()

        await asyncio.gather(*(one() for _ in range(CONCURRENT)))
    assert sum(handler.peak.values()) >= CONCURRENT // 2  # the replicas held them
    assert sum(st.spills for st in fe.stats.replicas.values()) > 0
    await _settled(lb)


async def test_the_factor_follows_the_shared_settings(make_balancer: BalancerFactory) -> None:
    """``PUT /lb/settings`` turns bounded loads on and off on the data path, without a restart."""
    handler = Concurrency()
    lb, _ = await raw_balancer(make_balancer, handler, replicas=REPLICAS)
    fe = frontend(lb)

    async def put_factor(factor: float) -> None:
        async with lb.client.put("/lb/settings", json={"balance_factor": factor}) as resp:
            assert resp.status == 200, await resp.text()

        async def applied() -> bool:
            return fe.balance_factor == factor

        await eventually(applied)

    assert fe.balance_factor == 0.0
    await put_factor(1.25)
    await _hot_burst(lb)
    spilled = sum(st.spills for st in fe.stats.replicas.values())
    assert spilled > 0
    await put_factor(0.0)
    await _hot_burst(lb)
    assert sum(st.spills for st in fe.stats.replicas.values()) == spilled

"""What an unauthenticated read may cost: ``/lb/simulate`` is bounded, cached and throttled, so a
client looping on it cannot starve the data path (issue 14)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from balancer.api.routing import RoutingApi
from balancer.api.simulation import SimulationGate
from balancer.hashing import RingSettings
from balancer.state.memory import InMemoryStore
from balancer.state.store import Replica
from balancer.state.view import RingView
from tests.conftest import Balancer, BalancerFactory

LOOPS = 4  # concurrent simulate loops, as in the issue
CLIENTS = 4  # concurrent proxied GET loops
MEASURE_S = 1.5


async def call(lb: Balancer, path: str, **params: str) -> tuple[int, Any, Any]:
    async with lb.client.get(path, params=params) as resp:
        return resp.status, await resp.json(), resp.headers


async def _proxied(lb: Balancer, seconds: float) -> tuple[float, float]:
    """Proxied ``GET /home`` from ``CLIENTS`` loops for ``seconds``: (requests/s, p99 in ms)."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def loop(n: int) -> None:
        i = 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            async with lb.client.get("/home", params={"id": f"k{n}-{i}"}) as resp:
                await resp.read()
                assert resp.status == 200
            latencies.append(time.perf_counter() - started)
            i += 1

    started = time.monotonic()
    await asyncio.gather(*(loop(n) for n in range(CLIENTS)))
    elapsed = time.monotonic() - started
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else elapsed
    return len(latencies) / elapsed, p99 * 1000


async def _read_forever(
    url: str, query: Callable[[int], tuple[str, dict[str, str]]], answers: list[int]
) -> None:
    """GET ``query(i)`` (path, params) for i = 0, 1, … until cancelled."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(url, timeout=timeout) as session:
        i = 0
        while True:
            path, params = query(i)
            async with session.get(path, params=params) as resp:
                await resp.read()
                answers.append(resp.status)
                if resp.status == 503:  # throttled: do as Retry-After says, at most 50 ms here
                    await asyncio.sleep(0.05)
            i += 1


async def _proxied_beside(
    lb: Balancer, query: Callable[[int, int], tuple[str, dict[str, str]]], answers: list[int]
) -> tuple[float, float]:
    """``_proxied`` while ``LOOPS`` clients loop on ``query(loop, i)``."""
    loops = [
        asyncio.ensure_future(_read_forever(lb.url, functools.partial(query, n), answers))
        for n in range(LOOPS)
    ]
    try:
        await asyncio.sleep(0.2)  # the loops are running
        return await _proxied(lb, MEASURE_S)
    finally:
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _settings(loop: int, i: int) -> tuple[str, dict[str, str]]:
    return "/lb/settings", {}


def _largest_simulation(loop: int, i: int) -> tuple[str, dict[str, str]]:
    """The largest ``add`` max_replicas=64 allows beside 3 replicas, and a different weight
    every call, so that no answer comes from the cache."""
    weight = 1 + (loop * 250 + i) % 1000
    return "/lb/simulate", {"add": "61", "weight": f"Server 1:{weight}"}


@pytest.mark.parametrize("algorithm", ["rendezvous", "maglev"])
async def test_simulate_loops_do_not_starve_the_data_path(
    make_balancer: BalancerFactory, algorithm: str
) -> None:
    """Proxied throughput beside 4 loops on /lb/simulate, against the same beside 4 loops on a
    read that costs nothing (/lb/settings): the same number of clients and admin requests, so
    what differs is what a simulation costs. Sampling rendezvous (seconds of GIL per call) or
    back-to-back maglev tables cut it to 0.3-0.5 of that; bounded, throttled simulations leave
    it at 1.2-2 (their loops make fewer requests)."""
    lb = await make_balancer(algorithm=algorithm, replicas=3, max_replicas=64)
    await _proxied(lb, 0.3)  # warm up: connections to the replicas
    alone_rps, alone_p99 = await _proxied(lb, MEASURE_S)
    reads: list[int] = []
    base_rps, base_p99 = await _proxied_beside(lb, _settings, reads)
    answers: list[int] = []
    loaded_rps, loaded_p99 = await _proxied_beside(lb, _largest_simulation, answers)
    print(
        f"\n{algorithm}: proxied GET /home from {CLIENTS} clients: {alone_rps:.0f} req/s, p99 "
        f"{alone_p99:.1f} ms alone; {base_rps:.0f} req/s, p99 {base_p99:.1f} ms beside {LOOPS} "
        f"loops of /lb/settings ({len(reads)} answers); {loaded_rps:.0f} req/s, p99 "
        f"{loaded_p99:.1f} ms beside {LOOPS} loops of /lb/simulate?add=61&weight=… "
        f"({answers.count(200)} x 200, {answers.count(503)} x 503)"
    )
    assert set(answers) <= {200, 503}
    assert loaded_rps > base_rps / 1.5, (base_rps, loaded_rps)
    assert loaded_p99 < max(3 * base_p99, base_p99 + 50), (base_p99, loaded_p99)


# -- bounded inputs, bounded cost --------------------------------------------------------------


async def test_simulate_inputs_are_bounded_by_max_replicas(
    make_balancer: BalancerFactory,
) -> None:
    lb = await make_balancer(replicas=3, max_replicas=8)
    status, body, _ = await call(lb, "/lb/simulate", add="5")
    assert status == 200 and body["message"]["replicas_after"] == 8
    status, body, _ = await call(lb, "/lb/simulate", remove="Server 1", add="6")
    assert status == 200 and body["message"]["replicas_after"] == 8
    too_many = ",".join(["Server 1:2"] * 9)
    for params in ({"add": "6"}, {"add": "1000"}, {"weight": too_many}, {"remove": "x," * 9}):
        status, body, _ = await call(lb, "/lb/simulate", **params)
        assert status == 400, params
        assert body["status"] == "failure", params
        assert body["message"].startswith("<Error> Not simulated: "), params


@pytest.mark.parametrize("algorithm", ["slots", "ring", "assignment", "maglev", "rendezvous"])
async def test_the_largest_simulation_allowed_is_quick(
    make_balancer: BalancerFactory, algorithm: str
) -> None:
    """61 added to 3 is the most max_replicas=64 allows: well under a second each (sampling
    rendezvous took 30 ms a member: seconds), and one more replica is refused."""
    lb = await make_balancer(algorithm=algorithm, replicas=3, max_replicas=64)
    started = time.monotonic()
    status, body, _ = await call(lb, "/lb/simulate", add="61")
    elapsed = time.monotonic() - started
    assert status == 200, body
    # (the assignment's 512 slots hold 57 of 64 replicas' 9 virtual servers each)
    assert body["message"]["replicas_after"] == (57 if algorithm == "assignment" else 64)
    assert elapsed < 1.0, elapsed
    status, body, _ = await call(lb, "/lb/simulate", add="62")
    assert status == 400 and "max_replicas=64" in body["message"]


async def test_ring_simulations_compare_a_bounded_number_of_points(
    make_balancer: BalancerFactory,
) -> None:
    """Weights stay within what a ring may be built with (500,000 points) but not within what a
    read may compare: 160 points per weight unit, both rings at most 2**15 points together."""
    lb = await make_balancer(algorithm="ring", replicas=3, max_replicas=64)
    started = time.monotonic()
    status, body, _ = await call(lb, "/lb/simulate", add="61", weight="Server 1:100")
    assert status == 200, body
    assert time.monotonic() - started < 1.0
    status, body, _ = await call(lb, "/lb/simulate", add="61", weight="Server 1:150")
    assert status == 400
    assert "a simulation compares at most 32768" in body["message"]


async def test_repeated_simulations_are_answered_from_the_cache(
    make_balancer: BalancerFactory,
) -> None:
    lb = await make_balancer(algorithm="maglev", replicas=3)
    first = await call(lb, "/lb/simulate", add="2")
    started = time.monotonic()
    # Twenty more of the same question, and the same member set asked another way: none waits
    # for a turn (a second computation would wait out the first one's cooldown, ~1 s).
    answers = await asyncio.gather(
        *(call(lb, "/lb/simulate", add="2") for _ in range(20)),
        call(lb, "/lb/simulate", add="2", weight="Server 1:1"),
    )
    assert time.monotonic() - started < 0.5
    assert {a[0] for a in answers} == {200}
    assert all(a[1] == first[1] for a in answers)


async def test_a_simulation_that_gets_no_turn_is_answered_503_with_retry_after() -> None:
    store = InMemoryStore()
    replicas = [Replica(f"Server {i}", i, f"127.0.0.1:{i}") for i in range(1, 4)]
    await store.commit(replicas, expected_epoch=0)
    view = RingView(store, RingSettings(algorithm="maglev"))
    await view.refresh()
    # A simulation may use 1% of the time: after a maglev table (~0.1 s of CPU) the next one
    # waits ~10 s, far beyond the 0.2 s a request may wait.
    gate: SimulationGate[dict[str, Any]] = SimulationGate(cpu_share=0.01, wait_s=0.2)
    app = web.Application()
    app.router.add_routes(RoutingApi(view, max_replicas=8, gate=gate).routes())
    async with TestClient(TestServer(app)) as client:
        async with client.get("/lb/simulate", params={"add": "1"}) as resp:
            assert resp.status == 200
        async with client.get("/lb/simulate", params={"add": "2"}) as resp:
            assert resp.status == 503
            assert int(resp.headers["Retry-After"]) >= 1
            body = await resp.json()
            assert body["status"] == "failure" and body["message"].startswith("<Error> ")
        async with client.get("/lb/simulate", params={"add": "1"}) as resp:
            assert resp.status == 200  # cached: no turn needed
    assert gate.computed == 1


async def test_ring_drawings_are_computed_at_most_seven_times_per_ring(
    make_balancer: BalancerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /lb/ring?bins=k is unauthenticated: each new k cost a computation (about a second of
    the GIL for rendezvous at 64 replicas), and its cache was cleared every 8 values, so loops
    over k cut proxied throughput from 822 to 14 req/s. k is now rounded up to a power of two
    in 64..4096: at most 7 computations per ring, whatever k a client sends."""
    import balancer.api.ui

    computed: list[int] = []
    real = balancer.api.ui.ring_arcs

    def counting(ring: Any, bins: int) -> Any:
        computed.append(bins)
        return real(ring, bins)

    monkeypatch.setattr(balancer.api.ui, "ring_arcs", counting)
    lb = await make_balancer()
    for k in range(1, 4097, 37):
        async with lb.client.get("/lb/ring", params={"bins": str(k)}) as resp:
            assert resp.status == 200
            served = (await resp.json())["message"]["bins"]
            assert served >= min(k, 4096) and served & (served - 1) == 0
    assert sorted(set(computed)) == [64, 128, 256, 512, 1024, 2048, 4096]
    assert len(computed) == 7


async def test_status_asks_the_runtime_at_most_once_a_second_and_survives_its_failure(
    make_balancer: BalancerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/lb/status is unauthenticated and asked the runtime (under Docker, an API call) on every
    request, and a RuntimeFailure from it was a 500."""
    from balancer.errors import RuntimeFailure

    lb = await make_balancer()
    calls = 0

    async def failing_list() -> list[Any]:
        nonlocal calls
        calls += _asked_by_the_admin_api()  # the leader's reconciler lists every round too
        raise RuntimeFailure("the Docker daemon is gone")

    monkeypatch.setattr(lb.runtime, "list", failing_list)
    await asyncio.sleep(1.1)  # whatever was asked before is stale now
    for _ in range(50):
        async with lb.client.get("/lb/status") as resp:
            assert resp.status == 200
            body = await resp.json()
    assert calls == 1
    assert [r["pid"] for r in body["replicas"]] == [None, None, None]


def _asked_by_the_admin_api() -> int:
    """1 when the admin API (not the reconciler) is the caller on this stack."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.endswith(os.path.join("api", "admin.py")):
            return 1
        frame = frame.f_back  # type: ignore[assignment]
    return 0

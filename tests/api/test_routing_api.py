"""Operator endpoints of routing: settings switched at runtime, weights, key lookup, simulation."""

from __future__ import annotations

import collections
from typing import Any

from balancer.hashing.slots import SLOT_COUNT
from tests.conftest import Balancer, BalancerFactory


async def call(lb: Balancer, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with lb.client.request(method, path, **kwargs) as resp:
        return resp.status, await resp.json()


async def owners(lb: Balancer, count: int = 3000) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for i in range(count):
        async with lb.client.get(f"/home?id=k{i}") as resp:
            seen[(await resp.json())["message"].split()[-1]] += 1
    return seen


async def test_lookup_names_the_replica_that_serves_the_key(lb: Balancer) -> None:
    for key in ("alpha", "42", "ünïcode key"):
        status, body = await call(lb, "GET", "/lb/lookup", params={"key": key, "count": "3"})
        assert status == 200
        found = body["message"]
        assert found["algorithm"] == "slots"
        assert len(found["candidates"]) == 3 == len(set(found["candidates"]))
        assert found["owner"] == found["candidates"][0]
        async with lb.client.get("/home", params={"id": key}) as resp:
            served_by = (await resp.json())["message"].split()[-1]
        assert f"Server {served_by}" == found["owner"] or served_by == found["owner"]


async def test_lookup_and_simulate_refuse_bad_queries(lb: Balancer) -> None:
    for path, params in [
        ("/lb/lookup", {}),
        ("/lb/lookup", {"key": "k", "count": "0"}),
        ("/lb/lookup", {"key": "k", "count": "x"}),
        ("/lb/simulate", {}),
        ("/lb/simulate", {"add": "-1"}),
        ("/lb/simulate", {"remove": "Server 99"}),
        ("/lb/simulate", {"weight": "Server 1"}),
        ("/lb/simulate", {"weight": "Server 1:1001"}),
    ]:
        status, body = await call(lb, "GET", path, params=params)
        assert status == 400, (path, params)
        assert body["status"] == "failure" and body["message"].startswith("<Error> ")


async def test_simulate_reports_the_share_a_change_would_move(lb: Balancer) -> None:
    status, body = await call(lb, "GET", "/lb/simulate", params={"add": "1"})
    assert status == 200
    sim = body["message"]
    assert (sim["replicas_before"], sim["replicas_after"]) == (3, 4)
    assert sim["ideal_share"] == 0.25
    assert sim["moved_share"] == SLOT_COUNT // 4 / SLOT_COUNT  # exact for the slot table
    assert sim["excess"] == 1.0
    status, body = await call(lb, "GET", "/lb/simulate", params={"remove": "Server 2"})
    assert body["message"]["excess"] < 1.0001 and body["message"]["replicas_after"] == 2
    status, body = await call(lb, "GET", "/lb/simulate", params={"weight": "Server 1:0"})
    assert abs(body["message"]["moved_share"] - 1 / 3) < 1e-4
    # Nothing was applied.
    status, rep = await call(lb, "GET", "/rep")
    assert rep["message"]["N"] == 3


async def test_settings_switch_at_runtime_and_are_refused_when_bad(lb: Balancer) -> None:
    status, body = await call(lb, "GET", "/lb/settings")
    assert body["message"]["settings"]["algorithm"] == "slots"
    epoch = body["message"]["epoch"]
    for bad in (
        {"algorithm": "nope"},
        {"points_per_weight": 0},
        {"balance_factor": 0.5},
        {"colour": "blue"},
        [1, 2],
    ):
        status, err = await call(lb, "PUT", "/lb/settings", json=bad)
        assert status == 400, bad
        assert err["message"].startswith("<Error> ")
    status, body = await call(lb, "PUT", "/lb/settings", json={"algorithm": "maglev"})
    assert status == 200
    assert body["message"]["settings"]["algorithm"] == "maglev"
    assert body["message"]["epoch"] == epoch + 1
    status, st = await call(lb, "GET", "/lb/status")
    assert st["algorithm"] == "maglev"
    assert sum((await owners(lb, 600)).values()) == 600  # still serving on the new algorithm


async def test_siphash_seed_is_never_shown(lb: Balancer) -> None:
    secret = 0x0123456789ABCDEF_FEDCBA9876543210
    status, _ = await call(
        lb, "PUT", "/lb/settings", json={"hash_name": "siphash", "hash_seed": secret}
    )
    assert status == 200
    for path in ("/lb/settings", "/lb/status"):
        async with lb.client.get(path) as resp:
            text = await resp.text()
        assert str(secret) not in text and "(secret)" in text
    # The membership document (with the seed) is for worker processes on the admin socket only.
    async with lb.client.get("/lb/membership") as resp:
        text = await resp.text()
    assert str(secret) not in text
    assert "endpoint does not exist in server replicas" in text


async def test_weight_zero_drains_a_replica_and_weights_shift_load(lb: Balancer) -> None:
    status, body = await call(lb, "PUT", "/lb/weight", json={"hostname": "Server 2", "weight": 0})
    assert status == 200
    assert body["message"]["weights"]["Server 2"] == 0
    seen = await owners(lb, 900)
    assert "2" not in seen and sum(seen.values()) == 900
    status, rep = await call(lb, "GET", "/rep")
    assert "Server 2" in rep["message"]["replicas"]  # drained, not removed
    await call(lb, "PUT", "/lb/weight", json={"hostname": "Server 2", "weight": 2})
    seen = await owners(lb, 3000)
    assert seen["2"] > 1.5 * max(seen["1"], seen["3"])  # half the slots: ~1500 vs ~750
    for bad in (
        {"hostname": "Server 9", "weight": 1},
        {"hostname": "Server 1", "weight": -1},
        {"hostname": "Server 1", "weight": True},
        {"hostname": "Server 1"},
        {"weight": 1},
    ):
        status, _err = await call(lb, "PUT", "/lb/weight", json=bad)
        assert status == 400, bad


async def test_assignment_mode_can_be_chosen_at_boot(make_balancer: BalancerFactory) -> None:
    lb = await make_balancer(algorithm="assignment")
    _status, body = await call(lb, "GET", "/lb/settings")
    assert body["message"]["settings"]["algorithm"] == "assignment"

"""Passive health on the real data path: a replica failing requests in a row is ejected from
this balancer's routing (its keys go to their next candidate, clients see no failure), gets no
traffic until its back-off ends, is ejected for longer the next time; at most the max share of
replicas is ejected, and ejection alone never fails a request."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Balancer, BalancerFactory, eventually
from tests.http.conftest import frontend, keys_by_owner
from tests.http.test_retries import Faulty, candidates, faulty_balancer
from tests.http.wire import Client


async def _get_all(lb: Balancer, keys: list[str], path: str = "/x") -> list[tuple[int, bytes]]:
    """GET each key in turn on one connection: (status, body) per key."""
    async with await Client.open(lb.service.port) as c:
        answers = []
        for key in keys:
            resp = await c.request("GET", f"{path}?id={key}")
            answers.append((resp.status, resp.body))
        return answers


def _seen(handler: Faulty, sid: str) -> int:
    return len(handler.seen.get(sid, []))


async def test_resetting_replica_is_ejected_and_left_alone_until_its_back_off_ends(
    make_balancer: BalancerFactory,
) -> None:
    lb, handler, ids = await faulty_balancer(
        make_balancer, eject_consecutive=3, base_ejection_s=2.0, max_ejection_s=10.0
    )
    fe = frontend(lb)
    victim = "Server 2"
    sid = ids[victim]
    handler.modes[sid] = "reset"
    keys = keys_by_owner(lb, "ej", per_owner=40)[victim]

    # Three failures in a row (each retried: the clients see none) eject it.
    answers = await _get_all(lb, keys[:3])
    assert [status for status, _ in answers] == [200] * 3
    assert _seen(handler, sid) == 3
    st = fe.stats.replica(victim)
    assert (st.ejections, st.ejected) == (1, 1)
    assert fe.outlier.ejected_now() == [victim]
    ejected_at = asyncio.get_running_loop().time()

    # Ejected: its keys go straight to their next candidate; it gets no request at all.
    answers = await _get_all(lb, keys[3:30])
    assert asyncio.get_running_loop().time() - ejected_at < 2.0, "too slow to test the back-off"
    for key, (status, body) in zip(keys[3:30], answers, strict=True):
        assert status == 200
        assert body.split()[0].decode() == ids[candidates(lb, key)[1]]
    assert _seen(handler, sid) == 3
    assert st.errors["reset"] == 3 and st.retries == 3  # no more failures, no more retries
    assert victim in await lb.names()  # ejection is local routing: still a member

    async with lb.client.get("/metrics") as resp:
        text = await resp.text()
    assert f'lb_outlier_ejections_total{{replica="{victim}"}} 1.0' in text
    assert f'lb_replica_ejected{{replica="{victim}"}} 1.0' in text

    # The back-off ends (2 s): the sweeper clears the gauge, and traffic reaches it again.
    async def released() -> bool:
        return st.ejected == 0

    await eventually(released, timeout_s=4.0)
    assert fe.outlier.ejected_now() == []
    answers = await _get_all(lb, keys[30:33])
    assert [status for status, _ in answers] == [200] * 3
    assert _seen(handler, sid) == 6
    # Three more failures: ejected again, for twice as long (4 s).
    assert st.ejections == 2 and fe.outlier.times_ejected(victim) == 2
    left_s = fe.ejected[victim] - asyncio.get_running_loop().time()
    assert 3.0 < left_s <= 4.0


async def test_a_success_resets_the_run_of_failures(make_balancer: BalancerFactory) -> None:
    lb, handler, ids = await faulty_balancer(make_balancer, eject_consecutive=3)
    victim = "Server 1"
    keys = keys_by_owner(lb, "flaky", per_owner=8)[victim]
    for batch in (keys[:2], keys[2:3], keys[3:5], keys[5:6], keys[6:8]):
        handler.modes[ids[victim]] = "ok" if len(batch) == 1 else "reset"
        assert [s for s, _ in await _get_all(lb, batch)] == [200] * len(batch)
    # 8 + 2: after each "ok", the first reset hit a pooled keep-alive connection, which is
    # replayed once on a fresh one to the same replica (the keep-alive race), uncounted.
    assert _seen(handler, ids[victim]) == 10
    assert frontend(lb).stats.replica(victim).ejections == 0


async def test_at_most_the_max_share_is_ejected(make_balancer: BalancerFactory) -> None:
    # Four replicas, three of them failing: floor(0.5 × 4) = 2 may be ejected at once. Retries
    # reach every replica, so each request still finds the healthy one.
    lb, handler, ids = await faulty_balancer(
        make_balancer, replicas=4, retries=3, eject_consecutive=2, base_ejection_s=10.0
    )
    fe = frontend(lb)
    healthy = "Server 4"
    for name, sid in ids.items():
        if name != healthy:
            handler.modes[sid] = "reset"
    keys = [k for keys in keys_by_owner(lb, "share", per_owner=6).values() for k in keys]
    answers = await _get_all(lb, keys)
    assert [status for status, _ in answers] == [200] * len(keys)
    assert {body.split()[0] for _, body in answers} == {ids[healthy].encode()}
    ejected = fe.outlier.ejected_now()
    assert len(ejected) == 2 and healthy not in ejected
    assert sum(fe.stats.replica(n).ejected for n in ids) == 2


@pytest.mark.parametrize("eject_on_5xx", [True, False])
async def test_5xx_answers_eject_only_when_counted(
    make_balancer: BalancerFactory, eject_on_5xx: bool
) -> None:
    lb, handler, ids = await faulty_balancer(
        make_balancer, eject_consecutive=2, eject_on_5xx=eject_on_5xx, base_ejection_s=10.0
    )
    victim = "Server 3"
    handler.modes[ids[victim]] = "503"
    keys = keys_by_owner(lb, "five", per_owner=5)[victim]
    answers = await _get_all(lb, keys)
    statuses = [status for status, _ in answers]
    if eject_on_5xx:  # not retried (retry_on has no 5xx), but ejected after two
        assert statuses == [503, 503, 200, 200, 200]
        assert frontend(lb).outlier.ejected_now() == [victim]
    else:
        assert statuses == [503] * 5
        assert frontend(lb).outlier.ejected_now() == []


async def test_ejection_alone_never_fails_a_request(make_balancer: BalancerFactory) -> None:
    # Every replica may be ejected; once all are, each key goes to its owner anyway.
    lb, handler, ids = await faulty_balancer(
        make_balancer,
        replicas=2,
        retries=0,
        eject_consecutive=1,
        max_ejection_share=1.0,
        base_ejection_s=10.0,
    )
    for sid in ids.values():
        handler.modes[sid] = "reset"
    by_owner = keys_by_owner(lb, "all", per_owner=2)
    first = [keys[0] for keys in by_owner.values()]
    assert [s for s, _ in await _get_all(lb, first)] == [502, 502]
    assert frontend(lb).outlier.ejected_now() == sorted(ids)
    for sid in ids.values():  # they recover, still ejected
        handler.modes[sid] = "ok"
    for name, keys in by_owner.items():
        [(status, body)] = await _get_all(lb, keys[1:])
        assert status == 200 and body.split()[0] == ids[name].encode()


async def test_draining_an_ejected_replica_forgets_its_ejection(
    make_balancer: BalancerFactory,
) -> None:
    lb, handler, ids = await faulty_balancer(
        make_balancer, eject_consecutive=2, base_ejection_s=30.0
    )
    fe = frontend(lb)
    victim = "Server 1"
    handler.modes[ids[victim]] = "reset"
    keys = keys_by_owner(lb, "drain", per_owner=2)[victim]
    assert [s for s, _ in await _get_all(lb, keys)] == [200, 200]
    st = fe.stats.replica(victim)
    assert st.ejected == 1
    async with lb.client.put("/lb/weight", json={"hostname": victim, "weight": 0}) as resp:
        assert resp.status == 200

    async def forgotten() -> bool:
        return st.ejected == 0 and fe.ejected == {}

    await eventually(forgotten, timeout_s=3.0)
    async with lb.client.get("/metrics") as resp:
        assert f'lb_replica_ejected{{replica="{victim}"}} 0.0' in await resp.text()

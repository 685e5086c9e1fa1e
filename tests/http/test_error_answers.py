"""Error statuses answered by a replica on the real data path: which ones count towards outlier
ejection (``eject_statuses``, default every 5xx as Envoy's ``consecutive_5xx``) and which ones
``retry_on`` sends to the key's next replica (``5xx``: any 500-599; ``gateway-error``: 502, 503,
504). The case that motivated it: a replica that passes ``/heartbeat`` but answers 500 to every
request must not keep a third of the traffic."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.conftest import Balancer, BalancerFactory
from tests.http.conftest import frontend, keys_by_owner, raw_balancer, server_ids
from tests.http.replicas import ok, requests
from tests.http.wire import Client

NO_EJECTION = {"eject_consecutive": 0}  # retries alone, without outlier detection


@dataclass
class Answering:
    """A raw replica handler that answers every request with ``status[server id]`` (200 by
    default), its id as the body; ``/heartbeat`` always passes (``requests`` answers it), so
    the active health checks see nothing wrong unless they probe another path."""

    status: dict[str, int] = field(default_factory=dict)
    seen: Counter[str] = field(default_factory=Counter)

    async def __call__(
        self, server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        async for _ in requests(r, w):
            self.seen[server_id] += 1
            code = self.status.get(server_id, 200)
            if code == 200:
                w.write(ok(server_id.encode()))
                continue
            body = server_id.encode()
            w.write(b"HTTP/1.1 %d Oops\r\nContent-Length: %d\r\n\r\n%s" % (code, len(body), body))


async def answering_balancer(
    make_balancer: BalancerFactory, replicas: int = 3, **overrides: object
) -> tuple[Balancer, Answering, dict[str, str]]:
    """A balancer over ``Answering`` replicas; also returns replica name → server id."""
    handler = Answering()
    lb, _ = await raw_balancer(make_balancer, handler, replicas=replicas, **overrides)
    return lb, handler, await server_ids(lb)


async def get_all(lb: Balancer, keys: list[str]) -> list[tuple[int, str]]:
    """GET each key in turn on one connection: (status, server id that answered) per key."""
    async with await Client.open(lb.service.port) as c:
        answers = []
        for key in keys:
            resp = await c.request("GET", f"/x?id={key}")
            answers.append((resp.status, resp.body.decode()))
        return answers


def next_candidate(lb: Balancer, key: str) -> str:
    return lb.service.view.current.ring.candidates(key, 2)[1]


async def test_a_replica_answering_500_to_everything_is_ejected(
    make_balancer: BalancerFactory,
) -> None:
    lb, handler, ids = await answering_balancer(
        make_balancer, eject_consecutive=3, base_ejection_s=30.0
    )
    victim = "Server 2"
    handler.status[ids[victim]] = 500
    keys = keys_by_owner(lb, "five-hundred", per_owner=20)[victim]
    answers = await get_all(lb, keys)
    # Not retried (retry_on has no 5xx by default), but three in a row eject it.
    assert [status for status, _ in answers] == [500] * 3 + [200] * 17
    assert frontend(lb).outlier.ejected_now() == [victim]
    assert handler.seen[ids[victim]] == 3  # no request after the third
    for key, (_, answered_by) in zip(keys[3:], answers[3:], strict=True):
        assert answered_by == ids[next_candidate(lb, key)]
    assert frontend(lb).stats.replica(victim).ejections == 1


@pytest.mark.parametrize(
    ("eject_statuses", "status", "ejected"),
    [("502-504", 500, False), ("502-504", 503, True), ("500,503", 500, True)],
)
async def test_eject_statuses_chooses_what_counts(
    make_balancer: BalancerFactory, eject_statuses: str, status: int, ejected: bool
) -> None:
    lb, handler, ids = await answering_balancer(
        make_balancer, eject_consecutive=2, eject_statuses=eject_statuses, base_ejection_s=30.0
    )
    victim = "Server 1"
    handler.status[ids[victim]] = status
    keys = keys_by_owner(lb, "chosen", per_owner=6)[victim]
    statuses = [s for s, _ in await get_all(lb, keys)]
    assert statuses == ([status] * 2 + [200] * 4 if ejected else [status] * 6)
    assert frontend(lb).outlier.ejected_now() == ([victim] if ejected else [])


@pytest.mark.parametrize(
    ("retry_on", "status", "retried"),
    [
        ("connect,reset,5xx", 500, True),
        ("connect,reset,5xx", 503, True),
        ("connect,reset,5xx", 599, True),
        ("connect,reset,gateway-error", 500, False),
        ("connect,reset,gateway-error", 502, True),
        ("connect,reset", 503, False),
    ],
)
async def test_retry_on_5xx_and_gateway_error(
    make_balancer: BalancerFactory, retry_on: str, status: int, retried: bool
) -> None:
    lb, handler, ids = await answering_balancer(make_balancer, retry_on=retry_on, **NO_EJECTION)
    victim = "Server 3"
    handler.status[ids[victim]] = status
    key = keys_by_owner(lb, "retried")[victim][0]
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("GET", f"/x?id={key}")
        if retried:
            assert (resp.status, resp.body.decode()) == (200, ids[next_candidate(lb, key)])
        else:
            assert (resp.status, resp.body.decode()) == (status, ids[victim])
        # Never a POST: the replica has it, and answered.
        resp = await c.request("POST", f"/x?id={key}", body=b"x")
        assert (resp.status, resp.body.decode()) == (status, ids[victim])
    assert frontend(lb).stats.replica(victim).retries == int(retried)


@pytest.mark.parametrize("eject_statuses", ["502-504", "500-599"])
async def test_share_of_500s_with_one_of_three_replicas_failing_everything(
    make_balancer: BalancerFactory, eject_statuses: str
) -> None:
    """The figure of the fix: 3,000 GETs over three replicas, one answering 500 to everything
    while passing its heartbeats, default ejection settings otherwise. ``502-504`` is what was
    counted before (a third were 500s); ``500-599`` is the default now."""
    lb, handler, ids = await answering_balancer(make_balancer, eject_statuses=eject_statuses)
    victim = "Server 2"
    handler.status[ids[victim]] = 500
    total = 3000
    answers = await get_all(lb, [f"k{i}" for i in range(total)])
    fives = sum(1 for status, _ in answers if status == 500)
    st = frontend(lb).stats.replica(victim)
    share = f"{100 * fives / total:.2f}%"
    print(f"\neject_statuses={eject_statuses}: 500s served {fives} of {total} ({share})")
    assert {status for status, _ in answers} <= {200, 500}
    assert fives == handler.seen[ids[victim]]  # every request it got was answered 500
    if eject_statuses == "502-504":
        assert st.ejections == 0 and fives > 0.25 * total
        return
    # Every 500 is one of a run of eject_consecutive (5) that ejected it, or of the current run.
    assert fives == 5 * st.ejections + frontend(lb).outlier.failing.get(victim, 0)
    assert 0 < fives < 0.01 * total

"""Retries on the real data path: which failures go to the key's next replica and which are
answered, for which methods, never twice to one replica, within the time budget and the retry
budget; with every replica failing, the contract's error shape."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

from balancer.config import Settings, load_settings
from balancer.errors import ConfigError
from balancer.http.frontend import RetryPolicy, retry_policy
from tests.conftest import Balancer, BalancerFactory
from tests.http.conftest import frontend, keys_by_owner, raw_balancer, server_ids
from tests.http.replicas import ok, requests
from tests.http.wire import Client, Response

NO_EJECTION = {"eject_consecutive": 0}  # retries alone, without outlier detection


def reset(w: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashing replica does."""
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


@dataclass
class Faulty:
    """A raw replica handler whose behaviour is set per server id: ``ok`` (default; answers
    200 with its id and the request body), ``reset`` (reads the whole request, waits
    ``stall_s``, resets the connection) or ``503`` (after ``stall_s`` too). Records every request
    per server id."""

    modes: dict[str, str] = field(default_factory=dict)
    stall_s: float = 0.0
    seen: defaultdict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))

    async def __call__(
        self, server_id: str, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        async for req in requests(r, w):
            self.seen[server_id].append(req.method + b" " + req.target)
            mode = self.modes.get(server_id, "ok")
            if mode == "reset":
                if self.stall_s:
                    await asyncio.sleep(self.stall_s)
                reset(w)
                return
            if mode == "503":
                if self.stall_s:
                    await asyncio.sleep(self.stall_s)
                body = b"busy " + server_id.encode()
                w.write(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % len(body)
                )
                w.write(body)
                continue
            w.write(ok(server_id.encode() + b" " + req.body))

    def count(self, target: bytes) -> dict[str, int]:
        """Server id → requests for ``target`` (method and target, e.g. b"GET /x?id=1")."""
        return {sid: seen.count(target) for sid, seen in self.seen.items() if target in seen}


async def faulty_balancer(
    make_balancer: BalancerFactory, replicas: int = 3, **overrides: object
) -> tuple[Balancer, Faulty, dict[str, str]]:
    """A balancer over ``Faulty`` replicas; also returns replica name → server id."""
    handler = Faulty()
    lb, _ = await raw_balancer(make_balancer, handler, replicas=replicas, **overrides)
    return lb, handler, await server_ids(lb)


def candidates(lb: Balancer, key: str, count: int = 3) -> list[str]:
    return lb.service.view.current.ring.candidates(key, count)


def assert_contract_error(resp: Response, status: int, starts: str) -> None:
    """``{"message": "<Error> …", "status": "failure"}`` with that status."""
    assert resp.status == status, resp.body
    assert resp.get("content-type") == "application/json"
    body = json.loads(resp.body)
    assert set(body) == {"message", "status"} and body["status"] == "failure", body
    assert body["message"].startswith("<Error> " + starts), body


async def test_get_goes_to_the_next_candidate_when_the_owner_resets(
    make_balancer: BalancerFactory,
) -> None:
    lb, handler, ids = await faulty_balancer(make_balancer, **NO_EJECTION)
    victim = "Server 2"
    handler.modes[ids[victim]] = "reset"
    keys = keys_by_owner(lb, "get", per_owner=10)[victim]
    async with await Client.open(lb.service.port) as c:
        for key in keys:
            resp = await c.request("GET", f"/x?id={key}")
            assert resp.status == 200, resp.body
            assert resp.body.split()[0].decode() == ids[candidates(lb, key)[1]]
    for key in keys:
        assert handler.count(b"GET /x?id=" + key.encode()) == {
            ids[victim]: 1,
            ids[candidates(lb, key)[1]]: 1,
        }
    st = frontend(lb).stats.replica(victim)
    assert st.errors["reset"] == 10 and st.retries == 10
    assert frontend(lb).stats.retries_in_flight == 0


async def test_post_is_not_retried_once_sent(make_balancer: BalancerFactory) -> None:
    lb, handler, ids = await faulty_balancer(make_balancer, **NO_EJECTION)
    victim = "Server 1"
    handler.modes[ids[victim]] = "reset"  # after reading the whole request
    key = keys_by_owner(lb, "post")[victim][0]
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("POST", f"/order?id={key}", body=b"pay 10")
        assert_contract_error(resp, 502, f"Replica {victim} closed the connection")
        # The connection stays usable, and a GET for the same key is retried.
        assert (await c.request("GET", f"/order?id={key}")).status == 200
    assert handler.count(f"POST /order?id={key}".encode()) == {ids[victim]: 1}
    assert frontend(lb).stats.replica(victim).retries == 1  # the GET only


async def test_retry_methods_is_configurable(make_balancer: BalancerFactory) -> None:
    lb, handler, ids = await faulty_balancer(make_balancer, retry_methods="GET,post", **NO_EJECTION)
    victim = "Server 1"
    handler.modes[ids[victim]] = "reset"
    key = keys_by_owner(lb, "post")[victim][0]
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("POST", f"/order?id={key}", body=b"pay 10")
        assert resp.status == 200
        assert resp.body == ids[candidates(lb, key)[1]].encode() + b" pay 10"
        resp = await c.request("HEAD", f"/order?id={key}")  # not in the list any more
        assert resp.status == 502


async def test_post_to_a_refusing_replica_is_retried(make_balancer: BalancerFactory) -> None:
    # Heartbeats far apart: the crash is not detected during the test, so only retries help.
    lb, handler, ids = await faulty_balancer(
        make_balancer, heartbeat_interval_s=30.0, heartbeat_timeout_s=1.0, **NO_EJECTION
    )
    victim = "Server 3"
    await lb.runtime.crash(victim)  # its port now refuses connections
    keys = keys_by_owner(lb, "refused", per_owner=5)[victim]
    async with await Client.open(lb.service.port) as c:
        for key in keys:
            resp = await c.request("POST", f"/order?id={key}", body=b"body of " + key.encode())
            assert resp.status == 200, resp.body
            assert resp.body == ids[candidates(lb, key)[1]].encode() + b" body of " + key.encode()
    assert frontend(lb).stats.replica(victim).errors["connect"] == 5
    assert ids[victim] not in handler.seen
    assert victim in await lb.names()  # still a member: only the retries helped


async def test_refused_connects_are_retried_outside_the_retry_budget(
    make_balancer: BalancerFactory,
) -> None:
    """A killed replica under concurrent load: every request for its keys goes elsewhere, even
    when more of them fail at once than the budget's minimum of 3 (nothing reached it)."""
    lb, handler, _ids = await faulty_balancer(
        make_balancer, heartbeat_interval_s=30.0, heartbeat_timeout_s=1.0, **NO_EJECTION
    )
    handler.stall_s = 0.2  # answers take a while, so the retries overlap
    victim = "Server 3"
    await lb.runtime.crash(victim)
    keys = keys_by_owner(lb, "burst", per_owner=12)[victim]

    async def one(key: str) -> Response:
        async with await Client.open(lb.service.port) as c:
            return await c.request("GET", f"/b?id={key}")

    async with asyncio.timeout(15.0):
        answers = await asyncio.gather(*(one(k) for k in keys))
    assert [r.status for r in answers] == [200] * len(keys)
    stats = frontend(lb).stats
    assert stats.retries_in_flight_peak > 3  # more overlapping retries than the budget allows
    assert stats.retry_budget_exhausted == 0


async def test_never_the_same_replica_twice(make_balancer: BalancerFactory) -> None:
    # More retries allowed than there are other replicas: each is still tried once only.
    lb, handler, ids = await faulty_balancer(make_balancer, retries=6, **NO_EJECTION)
    for sid in ids.values():
        handler.modes[sid] = "reset"
    async with await Client.open(lb.service.port) as c:
        for i in range(20):
            resp = await c.request("GET", f"/all?id=k{i}")
            # Every replica failed: the contract's error shape, naming the last one tried.
            last = candidates(lb, f"k{i}")[2]
            assert_contract_error(resp, 502, f"Replica {last} closed the connection")
            assert handler.count(f"GET /all?id=k{i}".encode()) == dict.fromkeys(ids.values(), 1)


async def test_every_replica_refusing_answers_the_contract_error(
    make_balancer: BalancerFactory,
) -> None:
    lb, _, _ = await faulty_balancer(
        make_balancer, heartbeat_interval_s=30.0, heartbeat_timeout_s=1.0, **NO_EJECTION
    )
    for name in await lb.names():
        await lb.runtime.crash(name)
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("POST", "/x?id=7", body=b"{}")
        assert_contract_error(resp, 502, "Could not connect to replica ")
        resp = await c.request("HEAD", "/x?id=7")
        assert resp.status == 502 and resp.body == b""
    stats = frontend(lb).stats
    assert sum(st.errors["connect"] for st in stats.replicas.values()) == 6  # 3 per request


@pytest.mark.parametrize("retry_on", ["connect,reset,5xx", "connect,reset"])
async def test_5xx_retried_only_when_enabled(make_balancer: BalancerFactory, retry_on: str) -> None:
    lb, handler, ids = await faulty_balancer(make_balancer, retry_on=retry_on, **NO_EJECTION)
    victim = "Server 2"
    handler.modes[ids[victim]] = "503"
    key = keys_by_owner(lb, "busy")[victim][0]
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("GET", f"/x?id={key}")
        if "5xx" in retry_on:
            assert resp.status == 200
            assert resp.body.split()[0].decode() == ids[candidates(lb, key)[1]]
        else:
            assert resp.status == 503 and resp.body == b"busy " + ids[victim].encode()
        # Never for a POST: the replica has it, and answered.
        resp = await c.request("POST", f"/x?id={key}", body=b"x")
        assert resp.status == 503 and resp.body == b"busy " + ids[victim].encode()
        assert (await c.request("GET", f"/x?id={key}")).status == (
            200 if "5xx" in retry_on else 503
        )
    st = frontend(lb).stats.replica(victim)
    assert st.by_class[5] == 3  # every 503 counted as the replica's answer, relayed or not
    assert st.retries == (2 if "5xx" in retry_on else 0)


async def test_5xx_from_every_replica_relays_the_last_answer(
    make_balancer: BalancerFactory,
) -> None:
    lb, handler, ids = await faulty_balancer(
        make_balancer, retry_on="connect,reset,5xx", **NO_EJECTION
    )
    for sid in ids.values():
        handler.modes[sid] = "503"
    async with await Client.open(lb.service.port) as c:
        resp = await c.request("GET", "/x?id=5")
    assert resp.status == 503
    assert resp.body == b"busy " + ids[candidates(lb, "5")[2]].encode()
    assert handler.count(b"GET /x?id=5") == dict.fromkeys(ids.values(), 1)


@pytest.mark.parametrize(("timeout_s", "tried"), [(0.95, 2), (5.0, 3)])
async def test_time_budget_stops_retries(
    make_balancer: BalancerFactory, timeout_s: float, tried: int
) -> None:
    lb, handler, ids = await faulty_balancer(
        make_balancer, retry_timeout_s=timeout_s, **NO_EJECTION
    )
    handler.stall_s = 0.5  # each attempt fails 0.5 s after it was sent
    for sid in ids.values():
        handler.modes[sid] = "reset"
    loop = asyncio.get_running_loop()
    async with await Client.open(lb.service.port) as c:
        started = loop.time()
        resp = await c.request("GET", "/slow?id=42")
        took = loop.time() - started
    assert_contract_error(resp, 502, "Replica ")
    # With 0.95 s: the first failure (0.5 s) gets a second attempt, the second (1 s, never
    # sooner) no third one; the margin absorbs a slow machine.
    assert sum(handler.count(b"GET /slow?id=42").values()) == tried
    assert took >= 0.5 * tried


async def test_retry_budget_bounds_retries_in_flight(make_balancer: BalancerFactory) -> None:
    concurrent = 40
    lb, handler, ids = await faulty_balancer(
        make_balancer, retry_budget=0.2, retry_on="5xx", **NO_EJECTION
    )
    handler.stall_s = 0.3  # every attempt is in flight for a while, then answers 503
    for sid in ids.values():
        handler.modes[sid] = "503"
    stats = frontend(lb).stats

    async def one(i: int) -> Response:
        async with await Client.open(lb.service.port) as c:
            return await c.request("GET", f"/b?id=b{i}")

    async with asyncio.timeout(15.0):
        answers = await asyncio.gather(*(one(i) for i in range(concurrent)))
    for resp in answers:  # the last replica's answer, relayed when no retry follows
        assert resp.status == 503, resp.body
    # Retries in flight never passed max(3, 0.2 × requests in flight ≤ 40).
    assert 0 < stats.retries_in_flight_peak <= max(3, int(0.2 * concurrent))
    assert stats.retry_budget_exhausted > 0
    assert stats.retries_in_flight == 0  # every slot was given back
    tried = sum(len(seen) for seen in handler.seen.values())
    assert tried < 3 * concurrent  # the budget held retries back
    async with lb.client.get("/metrics") as metrics:
        text = await metrics.text()
    assert f"lb_retry_budget_exhausted_total {float(stats.retry_budget_exhausted)}" in text


async def test_requests_that_die_with_their_replica_are_retried_beyond_the_budget(
    make_balancer: BalancerFactory,
) -> None:
    """Issue 14: SIGKILL of a replica under load reset every request in flight on it at once,
    and the retry budget (meant for overloaded replicas answering 5xx) refused most of their
    retries: 502s. Resets before any response byte are bounded by ``retries`` alone."""
    concurrent = 60
    # Budget 0: retries of answered requests would be held to the minimum of 3 in flight.
    lb, handler, ids = await faulty_balancer(make_balancer, retry_budget=0.0, **NO_EJECTION)
    victim = next(iter(ids))
    keys = keys_by_owner(lb, "dying", per_owner=concurrent)[victim]
    handler.stall_s = 0.3  # all of them in flight on the victim, then reset together
    handler.modes[ids[victim]] = "reset"
    stats = frontend(lb).stats

    async def one(key: str) -> Response:
        async with await Client.open(lb.service.port) as c:
            return await c.request("GET", f"/d?id={key}")

    async with asyncio.timeout(15.0):
        answers = await asyncio.gather(*(one(k) for k in keys))
    assert [r.status for r in answers] == [200] * concurrent
    assert stats.retries_in_flight_peak > 3  # beyond the budget
    assert stats.retry_budget_exhausted == 0
    assert stats.retries_in_flight == 0


async def test_admin_routes_are_unaffected(make_balancer: BalancerFactory) -> None:
    lb, _, _ = await faulty_balancer(make_balancer, retry_on="5xx", retry_methods="")
    async with lb.client.get("/rep") as resp:
        assert resp.status == 200
        assert (await resp.json())["message"]["N"] == 3


def test_retry_settings() -> None:
    assert retry_policy(Settings().retry) == RetryPolicy(
        frozenset({"GET", "HEAD", "OPTIONS"}), frozenset({"connect", "reset"}), 5.0, 0.2
    )
    s = load_settings(
        ["--retry-methods", "get, PUT", "--retry-on", "5xx,connect", "--retry-budget", "0.5"],
        {"LB_RETRY_TIMEOUT_S": "1.5"},
    )
    policy = retry_policy(s.retry)
    assert (set(policy.methods), set(policy.on)) == ({"GET", "PUT"}, {"5xx", "connect"})
    assert (policy.timeout_s, policy.budget) == (1.5, 0.5)
    assert retry_policy(load_settings(["--retry-methods", ""], {}).retry).methods == frozenset()
    for argv, message in [
        (["--retry-on", "connect,timeout"], "retry_on must be a comma list of 5xx, connect"),
        (["--retry-methods", "GET,NOT A METHOD"], "retry_methods must be a comma list"),
        (["--retry-budget", "2"], "retry_budget must be in [0, 1]"),
        (["--retry-timeout-s", "0"], "retry_timeout_s must be positive"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_settings(argv, {})

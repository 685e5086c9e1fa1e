"""``RedisRelay``: a follower's ``/add`` and ``/rm`` reach the leader and its answer comes back.

Runs over fakeredis and a real redis-server (skipped with a reason when there is none). The
follower and the leader use separate clients, as two instances do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
import redis.asyncio as redis

from balancer.errors import NotLeaderError, StoreUnavailable
from balancer.state import keys
from balancer.state.coordination import AdminReply, ChangeHandler
from balancer.state.redis_relay import RedisRelay
from tests.support.ports import free_port
from tests.support.shared_redis import shared_redis

Request = tuple[str, int, list[str]]


@dataclass
class Relays:
    client: Callable[[], redis.Redis]
    prefix: str
    server: fakeredis.FakeServer | None

    def relay(self, *, pickup_s: float = 0.5, answer_s: float = 2.0) -> RedisRelay:
        return RedisRelay(
            self.client(), pickup_timeout_s=pickup_s, answer_timeout_s=answer_s, prefix=self.prefix
        )

    async def queued(self) -> int:
        return int(await self.client().llen(keys.admin_queue(self.prefix)))


@pytest.fixture(params=["fakeredis", "redis"])
async def relays(request: pytest.FixtureRequest, redis_url: str | None) -> AsyncIterator[Relays]:
    # Real clients wait longer than the relay's 1 s BLPOP, as the balancer's client does.
    async with shared_redis(request.param, redis_url, socket_timeout_s=3.0) as shared:
        yield Relays(shared.client, shared.prefix, shared.server)


@contextlib.asynccontextmanager
async def serving(relay: RedisRelay, handler: ChangeHandler) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.serve(handler), name="test relay leader")
    try:
        yield task
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=3.0)
        assert done, "serve() did not stop when cancelled"


class Recorder:
    """A leader's change handler: records every request and answers with ``reply``."""

    def __init__(
        self, reply: Callable[[Request], AdminReply] | None = None, delay_s: float = 0.0
    ) -> None:
        self.calls: list[Request] = []
        self._reply = reply or (lambda r: AdminReply(200, f"{r[0]} {r[1]}".encode()))
        self.delay_s = delay_s

    async def __call__(self, op: str, args: dict[str, Any]) -> AdminReply:
        request = (op, args["n"], args["hostnames"])
        self.calls.append(request)
        await asyncio.sleep(self.delay_s)
        return self._reply(request)


# Every byte value, plus UTF-8 text: the relay must not reinterpret the body.
ODD_BODY = bytes(range(256)) + "<Error> name “Server é” ✓\r\n".encode()


async def test_forward_returns_the_leaders_exact_status_and_body(relays: Relays) -> None:
    leader = Recorder(lambda r: AdminReply(418, ODD_BODY))
    async with serving(relays.relay(), leader):
        reply = await asyncio.wait_for(
            relays.relay().forward("add", {"n": 2, "hostnames": ["Server é", "web-1"]}), 5.0
        )
    assert reply == AdminReply(418, ODD_BODY)
    assert type(reply.body) is bytes
    assert leader.calls == [("add", 2, ["Server é", "web-1"])]


async def test_forward_of_a_remove_with_no_hostnames(relays: Relays) -> None:
    leader = Recorder(lambda r: AdminReply(400, b""))
    async with serving(relays.relay(), leader):
        reply = await asyncio.wait_for(relays.relay().forward("rm", {"n": 3, "hostnames": []}), 5.0)
    assert reply == AdminReply(400, b"")
    assert leader.calls == [("rm", 3, [])]


async def test_concurrent_forwards_each_get_their_own_answer(relays: Relays) -> None:
    count = 12

    async def later_first(op: str, args: dict[str, Any]) -> AdminReply:
        n, hostnames = args["n"], args["hostnames"]
        await asyncio.sleep(0.02 * (count - n))  # answers arrive in the reverse order
        return AdminReply(200 + n, f"{op} {n} {hostnames}".encode())

    follower, other = relays.relay(), relays.relay()  # two followers share the leader
    async with serving(relays.relay(), later_first):
        replies = await asyncio.wait_for(
            asyncio.gather(
                *(
                    (follower if n % 2 else other).forward("add", {"n": n, "hostnames": [f"h{n}"]})
                    for n in range(count)
                )
            ),
            10.0,
        )
    assert replies == [AdminReply(200 + n, f"add {n} ['h{n}']".encode()) for n in range(count)]
    assert await relays.queued() == 0


async def test_no_leader_is_not_leader_error_and_the_request_is_withdrawn(relays: Relays) -> None:
    follower = relays.relay(pickup_s=0.3, answer_s=5.0)
    started = time.monotonic()
    with pytest.raises(NotLeaderError, match="nothing was changed"):
        await asyncio.wait_for(follower.forward("add", {"n": 1, "hostnames": ["ghost"]}), 5.0)
    took = time.monotonic() - started
    assert 0.3 <= took < 1.5, f"gave up after {took:.2f}s, not the pickup timeout"
    assert await relays.queued() == 0  # taken back off the queue
    # A leader elected afterwards never applies the request the client was told failed.
    leader = Recorder()
    async with serving(relays.relay(), leader):
        probe = await asyncio.wait_for(
            relays.relay().forward("rm", {"n": 7, "hostnames": ["probe"]}), 5.0
        )
        await asyncio.sleep(0.1)
    assert probe == AdminReply(200, b"rm 7")  # the leader was serving the queue
    assert leader.calls == [("rm", 7, ["probe"])]


async def test_a_leader_that_answers_after_the_pickup_timeout_still_answers(
    relays: Relays,
) -> None:
    leader = Recorder(delay_s=0.7)  # longer than pickup, shorter than pickup + answer
    follower = relays.relay(pickup_s=0.3, answer_s=2.0)
    async with serving(relays.relay(), leader):
        started = time.monotonic()
        reply = await asyncio.wait_for(follower.forward("add", {"n": 3, "hostnames": []}), 5.0)
        took = time.monotonic() - started
    assert reply == AdminReply(200, b"add 3")
    assert took >= 0.7
    assert leader.calls == [("add", 3, [])]


async def test_a_leader_that_never_answers_is_not_leader_error(relays: Relays) -> None:
    hang = asyncio.Event()

    async def stuck(op: str, n: int, hostnames: list[str]) -> AdminReply:
        await hang.wait()
        return AdminReply(200, b"too late")

    follower = relays.relay(pickup_s=0.2, answer_s=0.3)
    async with serving(relays.relay(), stuck):
        started = time.monotonic()
        with pytest.raises(NotLeaderError, match="did not answer in time"):
            await asyncio.wait_for(follower.forward("add", {"n": 1, "hostnames": []}), 5.0)
        took = time.monotonic() - started
    assert 0.5 <= took < 2.0, f"gave up after {took:.2f}s"


async def test_a_malformed_request_does_not_stop_the_leader(relays: Relays) -> None:
    leader = Recorder()
    await relays.client().rpush(keys.admin_queue(relays.prefix), "not json", '{"id": "x"}')
    async with serving(relays.relay(), leader):
        reply = await asyncio.wait_for(
            relays.relay().forward("add", {"n": 1, "hostnames": ["ok"]}), 5.0
        )
    assert reply == AdminReply(200, b"add 1")
    assert leader.calls == [("add", 1, ["ok"])]


@pytest.mark.parametrize("relays", ["fakeredis"], indirect=True)  # outage: connected=False
async def test_forward_with_redis_down_is_store_unavailable(relays: Relays) -> None:
    assert relays.server is not None
    follower = relays.relay(pickup_s=0.3)
    relays.server.connected = False
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(follower.forward("add", {"n": 1, "hostnames": []}), 5.0)


async def test_forward_to_an_unreachable_redis_server_is_store_unavailable() -> None:
    client = redis.Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1, socket_connect_timeout=1
    )
    relay = RedisRelay(client, pickup_timeout_s=0.3, answer_timeout_s=0.3, prefix="t:")
    try:
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(relay.forward("add", {"n": 1, "hostnames": []}), 5.0)
    finally:
        await client.aclose()


@pytest.mark.parametrize("relays", ["fakeredis"], indirect=True)  # outage: connected=False
async def test_the_leader_keeps_serving_after_a_redis_outage(relays: Relays) -> None:
    assert relays.server is not None
    leader = Recorder()
    async with serving(relays.relay(), leader) as task:
        relays.server.connected = False
        await asyncio.sleep(0.3)  # serve() meets the outage and waits it out
        assert not task.done()
        relays.server.connected = True
        reply = await asyncio.wait_for(
            relays.relay(pickup_s=3.0).forward("add", {"n": 4, "hostnames": []}), 5.0
        )
    assert reply == AdminReply(200, b"add 4")
    assert leader.calls == [("add", 4, [])]

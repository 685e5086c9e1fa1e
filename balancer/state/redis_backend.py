"""The Redis state backend: ``RedisStore``, ``LeaderElector`` and ``RedisRelay`` on one server.

Owns ``redis_backend``, the one place the three are put together. Each gets its own client,
because each blocks differently: the store's calls and the elector's renewals must not queue
behind the relay's ``BLPOP``, which waits up to a second, so the relay's client allows that
second on top of the per-call timeout. The elector's fencing token is the one the store checks
(both use the same key prefix).
Must not import: aiohttp, docker.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as redis

from balancer.state import keys
from balancer.state.backends import StateBackend
from balancer.state.redis_cancel import keep_cancellations
from balancer.state.redis_leadership import LeaderElector
from balancer.state.redis_relay import RedisRelay
from balancer.state.redis_store import RedisStore, redis_client
from balancer.state.store import Clock

# A new client whose every call gives up after the given seconds (tests pass fakeredis).
Connect = Callable[[float], redis.Redis]

_BLPOP_S = 2.0  # the relay's BLPOP waits 1 s; its client must wait longer than that


def redis_backend(
    url: str,
    *,
    instance_id: str,
    leader_ttl_s: float,
    timeout_s: float,
    answer_timeout_s: float,
    prefix: str = keys.PREFIX,
    clock: Clock = time.monotonic,
    connect: Connect | None = None,
    replicated: bool = False,
) -> StateBackend:
    """The state shared through the Redis server at ``url``.

    Args:
        instance_id: this instance's name in the election (and the lease's value).
        leader_ttl_s: how long the lease lasts without renewal. A follower's handed-over change
            waits that long, plus 2 s, for a leader to take it: a dead leader's lease runs out
            within the TTL and a follower is elected at once.
        timeout_s: how long any single Redis call may take.
        answer_timeout_s: how long a follower waits for the leader's answer once taken.
        prefix: the key prefix (tests isolate themselves with their own).
        clock: the elector's monotonic clock (the lease's validity is measured on it).
        connect: makes the clients instead of ``url`` (tests: fakeredis; Sentinel: clients of
            the master the Sentinels name, ``balancer.state.sentinel``).
        replicated: the server has replicas a failover may promote: fencing tokens are bound
            to the server that minted them and a term starts once a replica holds its lease
            (``LeaderElector``).

    Returns:
        The set; ``aclose`` it (or use it as an async context manager) to close its clients.
    """

    keep_cancellations()  # every client's sends, and the Sentinels' (``redis_cancel``)

    def client(call_timeout_s: float) -> redis.Redis:
        if connect is not None:
            return connect(call_timeout_s)
        return redis_client(url, timeout_s=call_timeout_s)

    store = RedisStore(client(timeout_s), prefix=prefix, replicated=replicated)
    elector_client = client(timeout_s)
    relay_client = client(timeout_s + _BLPOP_S)
    elector = LeaderElector(
        elector_client,
        instance_id,
        ttl_s=leader_ttl_s,
        prefix=prefix,
        clock=clock,
        replicated=replicated,
    )
    relay = RedisRelay(
        relay_client,
        pickup_timeout_s=leader_ttl_s + 2.0,
        answer_timeout_s=answer_timeout_s,
        prefix=prefix,
    )
    closers = (store.close, elector_client.aclose, relay_client.aclose)
    return StateBackend(store, elector, relay, closers, shared=True)

"""The Redis state backend behind Sentinel: the shared state follows its master's failovers.

Owns ``sentinel_backend``: the Redis backend (``redis_backend``) whose clients are redis-py's
asyncio Sentinel clients of the named master (``Sentinel.master_for``). Such a client asks the
Sentinels where the master is before it connects, and drops its connection when the server it
talks to answers ``READONLY`` (a demoted master), so the next call finds the promoted one. Each
call is retried once on a connection error, after a short pause, so a call that meets the
failover goes to the new master instead of failing; every call, and every question to a
Sentinel, is bounded by the per-call timeout. What each piece does on top (the store's
subscription moves to the new master, the relay's ``BLPOP`` retries, the elector starts a new
term with a greater token) is in ``redis_store``, ``redis_relay`` and ``redis_leadership``,
with the backend's ``replicated`` switch on: tokens bound to the server that minted them, and a
term that starts only once a replica holds its lease.

The URL (``--redis-url``) gives only the master's db, user name and password; the Sentinels
are asked without credentials. Secrets are never logged.
Must not import: aiohttp, docker.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import ExponentialBackoff

from balancer.state import keys
from balancer.state.backends import StateBackend
from balancer.state.redis_backend import redis_backend
from balancer.state.store import Clock

DEFAULT_MASTER_NAME = "chlb"


def _retry() -> Retry:
    """One retry, 50 ms later: long enough for a dropped connection to be made again to the
    master the Sentinels name now, short enough to keep every call bounded."""
    return Retry(ExponentialBackoff(cap=0.1, base=0.05), retries=1)


def credentials(url: str) -> dict[str, Any]:
    """The db, user name and password ``url`` gives (its host and port are the Sentinels')."""
    if not url:
        return {}
    parsed = parse_url(url)
    return {k: parsed[k] for k in ("db", "username", "password") if parsed.get(k) is not None}


class FollowingConnection(SentinelManagedConnection):
    """A Sentinel-managed connection that asks where the master is whenever it reconnects.

    redis-py (8.1, redis/redis-py#3874) asks only when the pool hands the connection out; a
    connection dropped in the middle of a call (the ``READONLY`` of a demoted master) is made
    again by its retry to the address it had, the demoted master, so the retry fails too.
    """

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self.is_connected and self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(
            check_health=check_health, retry_socket_connect=retry_socket_connect
        )


def master_client(
    watcher: Sentinel, master_name: str, *, call_timeout_s: float, timeout_s: float, url: str = ""
) -> redis.Redis:
    """A client of the master ``watcher`` names: each call waits ``call_timeout_s`` at most
    for its reply, a connection ``timeout_s``; retried once on a connection error (a master
    gone or demoted: redis-py's Sentinel connection turns ``READONLY`` into one)."""
    client: redis.Redis = watcher.master_for(
        master_name,
        socket_timeout=call_timeout_s,
        socket_connect_timeout=timeout_s,
        retry=_retry(),
        health_check_interval=10,
        connection_class=FollowingConnection,
        **credentials(url),
    )
    return client


def sentinel_backend(
    sentinels: Sequence[tuple[str, int]],
    *,
    master_name: str = DEFAULT_MASTER_NAME,
    url: str = "",
    instance_id: str,
    leader_ttl_s: float,
    timeout_s: float,
    answer_timeout_s: float,
    prefix: str = keys.PREFIX,
    clock: Clock = time.monotonic,
) -> StateBackend:
    """The state shared through the master the ``sentinels`` name ``master_name``.

    Args:
        sentinels: (host, port) of each Sentinel.
        master_name: the master's name in the Sentinels' configuration.
        url: a redis:// URL whose db, user name and password the master's clients use.
        instance_id, leader_ttl_s, timeout_s, answer_timeout_s, prefix, clock: as
            ``redis_backend``.

    Returns:
        The set; ``aclose`` it to close its clients and the Sentinel connections.

    Raises:
        ValueError: no Sentinel given.
    """
    if not sentinels:
        raise ValueError("sentinel_backend needs at least one Sentinel")
    bounded = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    sentinel_kwargs = {**bounded, "retry": _retry()}
    # redis-py leaves Sentinel's constructor unannotated
    watcher = Sentinel(list(sentinels), sentinel_kwargs=sentinel_kwargs, **bounded)  # type: ignore[no-untyped-call]

    def connect(call_timeout_s: float) -> redis.Redis:
        return master_client(
            watcher, master_name, call_timeout_s=call_timeout_s, timeout_s=timeout_s, url=url
        )

    backend = redis_backend(
        url,
        instance_id=instance_id,
        leader_ttl_s=leader_ttl_s,
        timeout_s=timeout_s,
        answer_timeout_s=answer_timeout_s,
        prefix=prefix,
        clock=clock,
        connect=connect,
        replicated=True,
    )
    return replace(backend, closers=(watcher.aclose, *backend.closers))


def describe(sentinels: Sequence[tuple[str, int]], master_name: str) -> str:
    """What to log about where the state is (no credentials)."""
    where = ",".join(f"{host}:{port}" for host, port in sentinels)
    return f"master {master_name!r} of the Sentinels at {where}"

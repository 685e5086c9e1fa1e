"""The ``Store`` in Redis: one truth shared by every balancer instance.

Owns ``RedisStore``. Membership is a hash ``{epoch, doc}`` changed only by a Lua compare-and-set
on the epoch, so two instances writing at once never lose an update: the loser gets None and
re-reads. Every commit publishes the new epoch on a channel; ``wait_for_change`` wakes on those
hints, and callers reload from Redis anyway on a timer (pub/sub is a hint, Redis is the truth).
Liveness is ``SET lb:alive:<name> PX ttl``: a TTL, never a clock compared across hosts.
Runtime records are one hash (name → JSON); each instance's status is a key with a TTL.
Every call has a socket timeout (set on the client), so no await hangs on a dead Redis, and
every Redis failure surfaces as ``StoreUnavailable``.
Must not import: aiohttp, docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from balancer.errors import StaleLeaderError, StoreUnavailable
from balancer.hashing import RingSettings
from balancer.runtimes.base import ReplicaHandle
from balancer.state import keys
from balancer.state.codec import membership_from_json, membership_json
from balancer.state.redis_cancel import keep_cancellations
from balancer.state.store import Membership, Replica

log = logging.getLogger(__name__)

# The run_id of the server running a script: which server minted a fencing token (Sentinel).
RUN_ID_LUA = "string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')"

# A fenced write's check, first in _COMMIT and _RESTORE: KEYS[3] fence counter, KEYS[4] the
# fence's minting server; ARGV[3] the writer's fencing token ('' = unfenced write), ARGV[4] '1'
# when the fence is bound to its server. A token is the latest leader's only if it is the
# counter's value and (bound) was minted on this very server: after a failover the promoted
# replica refuses every token minted on the old master, whether or not it was replicated.
_FENCED = (
    """if ARGV[3] ~= '' then
  if tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[3]) then
    return -2
  end
"""
    f"  if ARGV[4] == '1' and redis.call('GET', KEYS[4]) ~= {RUN_ID_LUA} then\n"
    """    return -2
  end
end
"""
)

# KEYS[1] membership hash, KEYS[2] changes channel, KEYS[3..4] and ARGV[3..4] as _FENCED;
# ARGV[1] expected epoch, ARGV[2] new doc.
# Returns the new epoch; -1 when the stored epoch is not the expected one (a lost race); -2 when
# the token is not the latest leader's (a stale leader: refused).
_COMMIT = (
    _FENCED
    + """local current = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if current ~= tonumber(ARGV[1]) then
  return -1
end
local epoch = current + 1
redis.call('HSET', KEYS[1], 'epoch', epoch, 'doc', ARGV[2])
redis.call('PUBLISH', KEYS[2], epoch)
return epoch
"""
)

# KEYS and ARGV[3..4] as _COMMIT; ARGV[1] the epoch to restore, ARGV[2] its doc.
# Returns 1 when written; 0 when the stored epoch is not older; -2 for a stale leader.
_RESTORE = (
    _FENCED
    + """if tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0') >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'doc', ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
"""
)


class RedisStore:
    """``Store`` over a redis-py asyncio client (see the module docstring)."""

    def __init__(
        self, client: redis.Redis, *, prefix: str = keys.PREFIX, replicated: bool = False
    ) -> None:
        """``replicated``: fencing tokens are bound to the server that minted them (Sentinel:
        ``LeaderElector(replicated=True)`` mints them so)."""
        self._redis = client
        self._prefix = prefix
        self._bound = "1" if replicated else ""
        self._commit = client.register_script(_COMMIT)
        self._restore = client.register_script(_RESTORE)
        self._changed = asyncio.Condition()
        self._hints = 0  # bumped on every pub/sub message and (re)subscription
        self._listener: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def membership(self) -> Membership:
        async with unavailable():
            epoch, doc = await self._redis.hmget(keys.membership(self._prefix), ["epoch", "doc"])
        if doc is None:
            return Membership(int(epoch or 0), ())
        return membership_from_json(json.loads(doc))

    async def commit(
        self,
        replicas: Sequence[Replica],
        *,
        expected_epoch: int,
        fence_token: int | None = None,
        target: int | None = None,
        settings: RingSettings | None = None,
        ring_state: str = "",
    ) -> Membership | None:
        names = [r.name for r in replicas]
        if len(set(names)) != len(names):
            raise ValueError("duplicate replica names in a membership commit")
        new = Membership(expected_epoch + 1, tuple(replicas), target, settings, ring_state)
        doc = json.dumps(membership_json(new))
        async with unavailable():
            await follow_master(self._redis)  # a fenced write goes where the term was won
            result = int(
                await self._commit(
                    keys=self._doc_keys(),
                    args=[expected_epoch, doc, fence_token or "", self._bound],
                )
            )
        if result == -2:
            raise StaleLeaderError(f"fencing token {fence_token} is no longer the leader's")
        return None if result < 0 else new

    async def restore(self, membership: Membership, *, fence_token: int | None = None) -> bool:
        doc = json.dumps(membership_json(membership))
        async with unavailable():
            await follow_master(self._redis)  # a fenced write goes where the term was won
            result = int(
                await self._restore(
                    keys=self._doc_keys(),
                    args=[membership.epoch, doc, fence_token or "", self._bound],
                )
            )
        if result == -2:
            raise StaleLeaderError(f"fencing token {fence_token} is no longer the leader's")
        return result == 1

    def _doc_keys(self) -> list[str]:
        return [
            keys.membership(self._prefix),
            keys.changes(self._prefix),
            keys.fence(self._prefix),
            keys.fence_server(self._prefix),
        ]

    async def wait_for_change(self, epoch: int, timeout_s: float) -> None:
        self._ensure_listener()
        # Read the hint counter before the epoch: a commit after the read publishes a hint
        # after it, so no change can slip between the check and the wait.
        hints = self._hints
        async with unavailable():
            stored = await self._redis.hget(keys.membership(self._prefix), "epoch")
        if int(stored or 0) != epoch:
            return
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._changed.wait_for(lambda: self._hints != hints)

    async def mark_alive(self, name: str, ttl_s: float) -> None:
        async with unavailable():
            await self._redis.set(keys.alive(name, self._prefix), 1, px=_ms(ttl_s))

    async def mark_dead(self, name: str) -> None:
        async with unavailable():
            await self._redis.delete(keys.alive(name, self._prefix))

    async def alive(self) -> frozenset[str]:
        marker = keys.alive("", self._prefix)
        async with unavailable():
            found = [_text(k)[len(marker) :] async for k in self._scan(keys.alive_pattern)]
        return frozenset(found)

    async def record_handle(self, handle: ReplicaHandle) -> None:
        async with unavailable():
            await self._redis.hset(
                keys.replicas(self._prefix), handle.name, json.dumps(handle.to_json())
            )

    async def drop_handle(self, name: str) -> None:
        async with unavailable():
            await self._redis.hdel(keys.replicas(self._prefix), name)

    async def handles(self) -> list[ReplicaHandle]:
        async with unavailable():
            raw = await self._redis.hgetall(keys.replicas(self._prefix))
        return [ReplicaHandle.from_json(json.loads(doc)) for doc in raw.values()]

    async def announce(self, instance_id: str, info: dict[str, Any], ttl_s: float) -> None:
        async with unavailable():
            await self._redis.set(
                keys.instance(instance_id, self._prefix), json.dumps(info), px=_ms(ttl_s)
            )

    async def withdraw(self, instance_id: str) -> None:
        async with unavailable():
            await self._redis.delete(keys.instance(instance_id, self._prefix))

    async def instances(self) -> dict[str, dict[str, Any]]:
        marker = keys.instance("", self._prefix)
        async with unavailable():
            names = [_text(k) async for k in self._scan(keys.instance_pattern)]
            docs = await self._redis.mget(names) if names else []
        return {
            name[len(marker) :]: json.loads(doc)
            for name, doc in zip(names, docs, strict=True)
            if doc is not None
        }

    async def record_event(self, event: dict[str, Any], keep: int) -> None:
        key = keys.events(self._prefix)
        async with unavailable(), self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, json.dumps(event))
            pipe.ltrim(key, 0, keep - 1)
            await pipe.execute()

    async def events(self, limit: int) -> list[dict[str, Any]]:
        async with unavailable():
            raw = await self._redis.lrange(keys.events(self._prefix), 0, limit - 1)
        return [json.loads(doc) for doc in raw]

    def _scan(self, pattern: Any) -> AsyncIterator[bytes | str]:
        return self._redis.scan_iter(match=pattern(self._prefix), count=500)

    async def close(self) -> None:
        """Stop the change listener (within about half a second) and close the client.

        The listener is asked to stop rather than cancelled: a cancel that lands inside a
        client's subscribe can be swallowed (fakeredis does), which would leave it hanging.
        """
        self._stop.set()
        task, self._listener = self._listener, None
        if task is not None:
            _, pending = await asyncio.wait({task}, timeout=3.0)
            for stuck in pending:
                log.warning("redis change listener did not stop; cancelling it")
                stuck.cancel()
        await self._redis.aclose()

    # -- change hints ------------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        if self._stop.is_set():
            return
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="redis change listener"
            )

    async def _listen(self) -> None:
        """Subscribe to the change channel; every message, and every resubscription, is a hint."""
        delay = 0.1
        resubscribing = False
        while not self._stop.is_set():
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(keys.changes(self._prefix))
                    if resubscribing:
                        await self._hint()  # changes may have been missed while disconnected
                    resubscribing = True
                    delay = 0.1
                    while not self._stop.is_set():
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=0.5
                        )
                        if message is not None:
                            await self._hint()
                        await follow_master(self._redis)
                        if self._moved(pubsub):
                            raise RedisConnectionError("the master moved (a Sentinel failover)")
            except (RedisError, OSError) as exc:
                log.warning("redis pub/sub lost (%s); resubscribing in %.1fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, 5.0)

    def _moved(self, pubsub: Any) -> bool:
        """Whether the store's calls now reach another master than the subscription does.

        Only a Sentinel-managed pool knows a master address: it changes when a call finds the
        old master gone or demoted (its ``READONLY`` errors drop the connection and the next
        one asks the Sentinels). A subscription left on a demoted master would hear nothing
        the new master publishes, so it is made again there.
        """
        master = getattr(self._redis.connection_pool, "master_address", None)
        connection = pubsub.connection
        if master is None or connection is None:
            return False
        return (connection.host, connection.port) != tuple(master)

    async def _hint(self) -> None:
        async with self._changed:
            self._hints += 1
            self._changed.notify_all()


def redis_client(url: str, *, timeout_s: float) -> redis.Redis:
    """A client whose every call gives up after ``timeout_s`` (connect and each reply), and
    whose calls keep a cancellation (``redis_cancel``)."""
    keep_cancellations()
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=10,
    )


async def follow_master(client: redis.Redis) -> None:
    """Ask the Sentinels where the master is now (a Sentinel-managed client; else nothing).

    When it moved, the client's idle connections to the old master are dropped and its next
    call goes to the new one. Without asking, a connection to the old master would live on
    until the Sentinels demote it (seconds after a failover, and it accepts writes meanwhile,
    which the demotion discards). A failed question changes nothing: the next call retries it.
    """
    discover = getattr(client.connection_pool, "get_master_address", None)
    if discover is not None:
        with contextlib.suppress(RedisError, OSError):
            await discover()


@contextlib.asynccontextmanager
async def unavailable() -> AsyncIterator[None]:
    """Turn a Redis failure into ``StoreUnavailable`` (callers must not know about redis)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"Redis is unavailable ({exc or type(exc).__name__})") from exc


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key

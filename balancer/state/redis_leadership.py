"""Leader election: a Redis lease with a fencing token.

Owns ``LeaderElector``. The lease is ``lb:leader = "<instance>:<token>"`` with a TTL; taking it
also increments ``lb:fence`` (one Lua script, so the two cannot come apart), and that number is
the leader's fencing token: the store refuses membership writes that carry an older token, so a
leader that stalled and lost its lease cannot overwrite its successor's changes. The lease is
renewed every ``ttl/3``; the leader steps down at once when a renewal is refused (someone else
holds the lease) or when its lease could have expired without a renewal getting through
(measured on this process's monotonic clock: a duration, never a time compared across hosts).
A timer fires at the moment the lease may run out, so stepping down never waits for a slow
Redis call to fail.

Replicated (Sentinel), a failover can lose the latest writes, lease and counter included, so two
more rules keep a token from ever going back: the counter is bound to the server that minted it
(its ``run_id``, read inside the script), and on any other server the counter first jumps by
``FENCE_JUMP``, while the store refuses tokens minted elsewhere; and a new term starts only once
``WAIT`` says a replica holds its lease and token. Implements ``coordination.Leadership``.
Must not import: aiohttp, docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import redis.asyncio as redis
from redis.exceptions import RedisError

from balancer.state import keys
from balancer.state.redis_store import RUN_ID_LUA, follow_master

log = logging.getLogger(__name__)

# KEYS[1] lease, KEYS[2] fence counter, KEYS[3] the fence's minting server; ARGV[1] instance
# id, ARGV[2] ttl ms, ARGV[3] a random start for a missing counter, ARGV[4] '1' to bind the fence
# to the server (Sentinel), ARGV[5] the jump → {token, 0, replicas online} when taken, else
# {0, ms until the lease runs out, 0}.
# A missing counter starts at the server's clock in microseconds (or the random start, if
# greater), and a bound counter jumps to at least that clock: after Redis lost its data, or on a
# promoted server that never received the counter, a counter restarted at 0 (or at a random
# number) would hand the new leader a token at or below one an old leader may still hold. The
# clock moves ~10^6 a second, faster than failovers (each takes seconds) add FENCE_JUMP, so tokens
# minted this way keep rising as long as the servers' clocks roughly agree.
# Bound to its server, a token minted on another server (before a failover) is void here: so is
# its lease, and the counter jumps past anything that server could have minted after its last
# write reached this one (the writes a failover loses).
_ACQUIRE = (
    "local here = ''\n"
    "if ARGV[4] == '1' then\n"
    f"  here = {RUN_ID_LUA}\n"
    """  if redis.call('GET', KEYS[3]) ~= here then
    redis.call('DEL', KEYS[1])
  end
end
if redis.call('SET', KEYS[1], 'taking', 'NX', 'PX', ARGV[2]) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[2], string.format('%.0f', math.max(now, tonumber(ARGV[3]))), 'NX')
  local replicas = 0
  if ARGV[4] == '1' then
    if redis.call('GET', KEYS[3]) ~= here then
      local jumped = tonumber(redis.call('INCRBY', KEYS[2], ARGV[5]))
      if jumped < now then
        redis.call('SET', KEYS[2], string.format('%.0f', now))
      end
      redis.call('SET', KEYS[3], here)
    end
    for _ in string.gmatch(redis.call('INFO', 'replication'), 'slave%d+:[^%c]*state=online') do
      replicas = replicas + 1
    end
  end
  local token = redis.call('INCR', KEYS[2])
  -- %.0f: Lua's own conversion of a number above 10^14 to a string has an exponent
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%.0f', token), 'PX', ARGV[2])
  return {token, 0, replicas}
end
return {0, redis.call('PTTL', KEYS[1]), 0}
"""
)
# KEYS[1] lease, KEYS[2] the fence's minting server; ARGV[1] our lease value, ARGV[2] ttl ms,
# ARGV[3] '1' when bound to the server → 1 renewed, 0 not ours any more. A bound lease found on
# another server than the one that minted its token (a failover) is dropped: a new term starts.
_RENEW = (
    """if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
"""
    f"if ARGV[3] == '1' and redis.call('GET', KEYS[2]) ~= {RUN_ID_LUA} then\n"
    """  redis.call('DEL', KEYS[1])
  return 0
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
)
# KEYS[1] lease; ARGV[1] our lease value.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# How far a bound counter jumps on a server that did not mint the latest token: more than any
# number of elections a failover could lose (those of one replication lag, a few seconds).
FENCE_JUMP = 1_000_000

Clock = Callable[[], float]


class LeaderElector:
    """Campaigns for the lease and keeps it (see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        instance_id: str,
        *,
        ttl_s: float = 3.0,
        prefix: str = keys.PREFIX,
        clock: Clock = time.monotonic,
        replicated: bool = False,
    ) -> None:
        """``replicated``: the server has replicas a failover may promote (Sentinel). The fence
        is then bound to the server that minted it, and a new term starts only once a replica
        acknowledged its lease and token (``WAIT``, within a sixth of the TTL)."""
        self._redis = client
        self._replicated = replicated
        self._id = instance_id
        self._ttl_ms = max(100, int(ttl_s * 1000))
        self._ack_ms = max(10, self._ttl_ms // 6)
        self._prefix = prefix
        self._clock = clock
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self.token: int | None = None  # the fencing token while leader
        self.elected = asyncio.Event()
        self.lost = asyncio.Event()
        self.lost.set()
        self._campaigned = asyncio.Event()
        self._valid_until = 0.0
        self._expiry: asyncio.TimerHandle | None = None
        self._resigned = False

    @property
    def is_leader(self) -> bool:
        """True only while the lease is certainly ours."""
        if self.token is not None and self._clock() >= self._valid_until:
            self._step_down("the lease may have expired without a renewal")
        return self.token is not None

    async def wait_elected(self) -> None:
        await self.elected.wait()

    async def wait_lost(self) -> None:
        await self.lost.wait()

    async def wait_campaigned(self) -> None:
        await self._campaigned.wait()

    async def run(self) -> None:
        """Campaign and renew forever; a Redis error or a slow answer is a missed renewal."""
        interval_s = self._ttl_ms / 3000
        me = asyncio.current_task()
        try:
            while not self._resigned:
                if me is not None and me.cancelling():  # a cancel a client call swallowed
                    raise asyncio.CancelledError
                pause_s = interval_s
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
                    # that lands as the call completes, and this task would never stop.
                    async with asyncio.timeout(interval_s):
                        await follow_master(self._redis)  # Sentinel: a failover ends the term
                        if self.token is not None:
                            await self._keep()
                        else:  # try again right when the current lease runs out
                            pause_s = min(interval_s, await self._campaign() + 0.005)
                except (RedisError, OSError, TimeoutError) as exc:
                    log.warning("leader election: redis unavailable (%r)", exc)
                self._campaigned.set()
                self.is_leader  # noqa: B018  # steps down when the lease may have run out
                await asyncio.sleep(pause_s)
        finally:
            self._cancel_expiry()

    async def release(self) -> None:
        """Give the lease up for good (shutdown): a follower takes over without waiting for the TTL,
        and this elector does not campaign again."""
        self._resigned = True
        token = self.token
        self._step_down("shutting down")
        if token is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._release(keys=[self._lease_key()], args=[f"{self._id}:{token}"])

    async def _campaign(self) -> float:
        """Try to take the lease; returns the seconds until the holder's lease ends (0: won)."""
        started = self._clock()
        token, pttl_ms, replicas = await self._acquire(
            keys=[self._lease_key(), keys.fence(self._prefix), keys.fence_server(self._prefix)],
            args=[
                self._id,
                self._ttl_ms,
                random.randrange(1 << 40),
                "1" if self._replicated else "",
                FENCE_JUMP,
            ],
        )
        token = int(token)
        if token and not await self._acknowledged(token, int(replicas)):
            await self._release(keys=[self._lease_key()], args=[f"{self._id}:{token}"])
            return self._ttl_ms / 3000  # campaign again next round
        if token:
            self.token = token
            self._extend(started)
            self.lost.clear()
            self.elected.set()
            log.info("became leader with fencing token %d", token)
        return max(0.0, int(pttl_ms) / 1000)

    async def _acknowledged(self, token: int, replicas: int) -> bool:
        """Whether the new term may start: at once unless replicated; else once a replica holds
        the lease and token, so a failover cannot promote a replica that lost them.

        The lease is renewed and ``WAIT``-ed for on one connection (a pipeline): ``WAIT`` counts
        the replicas that acknowledged this connection's writes, and the renewal also checks
        that the connection still talks to the server that minted the token. A master with no
        replica online (none, or each still in its first sync) leads at once: waiting would
        leave the deployment leaderless until a replica synced, and a replica that syncs later
        copies the lease; one promoted before it synced has another run_id, so the bound fence
        still refuses this term's token there and jumps past it.
        """
        if not self._replicated:
            return True
        if replicas == 0:
            log.warning(
                "no replica online on the Redis master: term %d is not replicated yet", token
            )
            return True
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._renew(
                keys=[self._lease_key(), keys.fence_server(self._prefix)],
                args=[f"{self._id}:{token}", self._ttl_ms, "1"],
                client=pipe,
            )
            pipe.execute_command("WAIT", 1, self._ack_ms)
            renewed, acked = await pipe.execute()
        if int(renewed) and int(acked) >= 1:
            return True
        log.warning(
            "no replica acknowledged lease and token %d within %d ms: not leading this round",
            token,
            self._ack_ms,
        )
        return False

    async def _keep(self) -> None:
        started = self._clock()
        renewed = await self._renew(
            keys=[self._lease_key(), keys.fence_server(self._prefix)],
            args=[f"{self._id}:{self.token}", self._ttl_ms, "1" if self._replicated else ""],
        )
        if int(renewed):
            self._extend(started)
        else:
            self._step_down("the lease is held by someone else (or was minted before a failover)")

    def _extend(self, started: float) -> None:
        """The lease is ours until ``started + ttl`` (the request left before Redis set it)."""
        self._valid_until = started + self._ttl_ms / 1000
        self._cancel_expiry()
        delay = max(0.0, self._valid_until - self._clock())
        self._expiry = asyncio.get_running_loop().call_later(
            delay, self._step_down, "the lease may have expired without a renewal"
        )

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _step_down(self, why: str) -> None:
        if self.token is not None:
            log.warning("stepping down as leader (token %d): %s", self.token, why)
        self.token = None
        self._cancel_expiry()
        self.elected.clear()
        self.lost.set()

    def _lease_key(self) -> str:
        return keys.leader(self._prefix)

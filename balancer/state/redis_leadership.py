"""Leader election: a Redis lease with a fencing token.

Owns ``LeaderElector``. The lease is ``lb:leader = "<instance>:<token>"`` with a TTL; taking it
also increments ``lb:fence`` (one Lua script, so the two cannot come apart), and that number is
the leader's fencing token: the store refuses membership writes that carry an older token, so a
leader that stalled and lost its lease cannot overwrite its successor's changes. The lease is
renewed every ``ttl/3``; the leader steps down at once when a renewal is refused (someone else
holds the lease) or when its lease could have expired without a renewal getting through
(measured on this process's monotonic clock: a duration, never a time compared across hosts).
A timer fires at the moment the lease may run out, so stepping down never waits for a slow
Redis call to fail. Implements ``coordination.Leadership``.
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

log = logging.getLogger(__name__)

# KEYS[1] lease, KEYS[2] fence counter; ARGV[1] instance id, ARGV[2] ttl ms, ARGV[3] a random
# start for a missing counter → {token, 0} when taken, else {0, ms until the lease runs out}.
# The random start matters after Redis lost its data: a counter restarted at 0 would hand the
# new leader the very token an old leader may still hold, and fencing could not tell them apart.
_ACQUIRE = """
if redis.call('SET', KEYS[1], 'taking', 'NX', 'PX', ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[3], 'NX')
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
  return {token, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
"""
# KEYS[1] lease; ARGV[1] our lease value, ARGV[2] ttl ms → 1 renewed, 0 not ours any more.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS[1] lease; ARGV[1] our lease value.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

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
    ) -> None:
        self._redis = client
        self._id = instance_id
        self._ttl_ms = max(100, int(ttl_s * 1000))
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
        token, pttl_ms = await self._acquire(
            keys=[self._lease_key(), keys.fence(self._prefix)],
            args=[self._id, self._ttl_ms, random.randrange(1 << 40)],
        )
        token = int(token)
        if token:
            self.token = token
            self._extend(started)
            self.lost.clear()
            self.elected.set()
            log.info("became leader with fencing token %d", token)
        return max(0.0, int(pttl_ms) / 1000)

    async def _keep(self) -> None:
        started = self._clock()
        renewed = await self._renew(
            keys=[self._lease_key()], args=[f"{self._id}:{self.token}", self._ttl_ms]
        )
        if int(renewed):
            self._extend(started)
        else:
            self._step_down("the lease is held by someone else")

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

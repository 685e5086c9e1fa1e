"""Followers hand ``/add`` and ``/rm`` to the leader through a Redis list.

Owns ``RedisRelay`` (implements ``coordination.AdminRelay``). A follower pushes the request onto
``lb:admin:queue`` and waits on its own reply list; the leader pops requests, applies them as if
they had arrived at its own admin API, and pushes the HTTP answer back (status and exact body).
No instance needs to know another's address. If no leader takes a request in time the follower
takes it back off the queue (``LREM``), so a request answered 503 is never applied later.
Must not import: aiohttp, docker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from balancer.errors import NotLeaderError
from balancer.state import keys
from balancer.state.coordination import AdminReply, ChangeHandler
from balancer.state.redis_store import follow_master, unavailable

log = logging.getLogger(__name__)

_POLL_S = 1  # BLPOP timeout; the client's socket timeout must be longer
_REPLY_TTL_MS = 60_000


class RedisRelay:
    """See the module docstring."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        pickup_timeout_s: float,
        answer_timeout_s: float,
        prefix: str = keys.PREFIX,
    ) -> None:
        self._redis = client
        self._pickup_s = pickup_timeout_s
        self._answer_s = answer_timeout_s
        self._queue = keys.admin_queue(prefix)
        self._prefix = prefix

    async def forward(self, op: str, args: dict[str, Any]) -> AdminReply:
        request_id = uuid.uuid4().hex
        request = json.dumps({"id": request_id, "op": op, "args": args})
        async with unavailable():
            await self._redis.rpush(self._queue, request)
            reply = await self._reply(request_id, self._pickup_s)
            if reply is None:
                if await self._redis.lrem(self._queue, 1, request):
                    raise NotLeaderError(
                        f"No leader took the request within {self._pickup_s:g}s; "
                        "nothing was changed, try again"
                    )
                reply = await self._reply(request_id, self._answer_s)
        if reply is None:
            raise NotLeaderError(
                "The leader took the request but did not answer in time; it may still be applied"
            )
        return reply

    async def serve(self, handle: ChangeHandler) -> None:
        answering: set[asyncio.Task[None]] = set()
        me = asyncio.current_task()
        try:
            while True:
                if me is not None and me.cancelling():  # a cancel a client call swallowed
                    raise asyncio.CancelledError
                try:
                    await follow_master(self._redis)  # BLPOP where the requests now go
                    item = await self._redis.blpop([self._queue], timeout=_POLL_S)
                except (RedisError, OSError) as exc:
                    log.warning("admin relay: redis unavailable (%s)", exc)
                    await asyncio.sleep(_POLL_S)
                    continue
                if item is not None:
                    task = asyncio.create_task(self._answer(handle, item[1]))
                    answering.add(task)
                    task.add_done_callback(answering.discard)
        finally:
            for task in answering:
                task.cancel()

    async def _answer(self, handle: ChangeHandler, raw: bytes | str) -> None:
        try:
            request = json.loads(raw)
            args = request["args"]
            if not isinstance(args, dict):
                raise TypeError("args is not an object")
            reply = await handle(str(request["op"]), args)
            doc = json.dumps({"status": reply.status, "body": reply.body.decode("latin-1")})
            key = keys.admin_reply(request["id"], self._prefix)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, doc)
                pipe.pexpire(key, _REPLY_TTL_MS)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("admin relay: could not answer a handed-over request (%s)", exc)
        except (ValueError, KeyError, TypeError):
            log.exception("admin relay: malformed request %r", raw)

    async def _reply(self, request_id: str, timeout_s: float) -> AdminReply | None:
        key = keys.admin_reply(request_id, self._prefix)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            item = await self._redis.blpop([key], timeout=max(0.01, min(_POLL_S, remaining)))
            if item is not None:
                doc = json.loads(item[1])
                return AdminReply(int(doc["status"]), doc["body"].encode("latin-1"))
        return None

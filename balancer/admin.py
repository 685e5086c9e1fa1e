"""The contract's admin API: ``GET /rep``, ``POST /add``, ``DELETE /rm`` (``POST /rm`` alias),
plus ``GET /lb/status`` for operators.

Owns request validation and the mapping of errors to responses. Every rejected request changes
nothing and answers 400 ``{"message": "<Error> …", "status": "failure"}``; the two errors the
contract fixes use its exact strings. Every instance answers every endpoint: a change that
reaches a follower is handed to the leader through the relay and the leader's answer is
replayed. When the shared store is unreachable, reads answer from the ring this instance routes
on and changes answer 503.
Must not import: redis, docker, ``balancer.proxy``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from balancer.coordination import AdminRelay, AdminReply, Leadership
from balancer.errors import (
    ConflictError,
    NotLeaderError,
    RequestError,
    RuntimeFailure,
    StaleLeaderError,
    StoreUnavailable,
)
from balancer.manager import ReplicaManager
from balancer.membership import RingView
from balancer.names import is_valid_name, server_id
from balancer.runtime import ReplicaRuntime
from balancer.stats import TrafficStats
from balancer.store import Membership, Store, membership_json
from balancer.wire import (
    ADD_TOO_MANY_NAMES,
    CONTENT_TYPE,
    RM_TOO_MANY_NAMES,
    error_body,
    replicas_body,
)


def _reply(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type=CONTENT_TYPE)


async def parse_change(request: web.Request, too_many: str) -> tuple[int, list[str]]:
    """Validate an ``/add`` or ``/rm`` body → (n, hostnames).

    Raises:
        RequestError: with the message the client sees.
    """
    raw = await request.read()
    try:
        data: Any = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError("Request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise RequestError('Request body must be a JSON object like {"n": 1, "hostnames": []}')
    n = data.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RequestError("'n' must be a positive integer")
    hostnames = data.get("hostnames")
    if hostnames is None:
        hostnames = []
    if not isinstance(hostnames, list):
        raise RequestError("'hostnames' must be a list of hostnames")
    if len(hostnames) > n:
        raise RequestError(too_many)
    bad = [h for h in hostnames if not is_valid_name(h)]
    if bad:
        raise RequestError(
            f"Invalid hostname(s): {', '.join(map(repr, bad))}; a hostname is 1-63 letters, "
            "digits, '.', '_' or '-' (starting with a letter or digit), optionally after 'Server '"
        )
    ids = [server_id(h) for h in hostnames]
    dupes = sorted({h for h, i in zip(hostnames, ids, strict=True) if ids.count(i) > 1})
    if dupes:
        raise RequestError(f"Duplicate hostname(s) in request: {', '.join(dupes)}")
    return n, hostnames


class AdminApi:
    """Handlers bound to one manager, store and ring view."""

    def __init__(
        self,
        manager: ReplicaManager,
        store: Store,
        view: RingView,
        runtime: ReplicaRuntime,
        algorithm: str,
        stats: TrafficStats,
        *,
        leadership: Leadership,
        relay: AdminRelay,
        instance_id: str = "",
    ) -> None:
        self._manager = manager
        self._store = store
        self._view = view
        self._runtime = runtime
        self._algorithm = algorithm
        self._stats = stats
        self._leadership = leadership
        self._relay = relay
        self._instance_id = instance_id

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/rep", self.rep),
            web.post("/add", self.add),
            web.delete("/rm", self.rm),
            web.post("/rm", self.rm),
            web.get("/lb/status", self.status),
            web.get("/lb/membership", self.membership),
            web.post("/lb/worker-stats", self.worker_stats),
        ]

    async def membership(self, request: web.Request) -> web.Response:
        """The membership document, for worker processes; ``wait_epoch`` makes it a long poll."""
        wait_epoch = request.query.get("wait_epoch")
        if wait_epoch is not None:
            timeout_s = min(float(request.query.get("timeout_s", "5")), 30.0)
            await self._view.wait_for_change(int(wait_epoch), timeout_s)
        return web.json_response(membership_json(self._view.current.membership))

    async def worker_stats(self, request: web.Request) -> web.Response:
        """A worker process's latest counters (reachable on the admin socket only)."""
        self._stats.remote[request.query["id"]] = await request.json()
        return web.Response(status=204)

    async def rep(self, request: web.Request) -> web.Response:
        return _reply(200, replicas_body((await self._membership()).names))

    async def add(self, request: web.Request) -> web.Response:
        return await self._change(request, "add", ADD_TOO_MANY_NAMES)

    async def rm(self, request: web.Request) -> web.Response:
        return await self._change(request, "rm", RM_TOO_MANY_NAMES)

    async def apply_change(self, op: str, n: int, hostnames: list[str]) -> AdminReply:
        """Apply a validated change here, on the leader (also for changes handed over)."""
        apply = self._manager.add if op == "add" else self._manager.remove
        try:
            membership = await apply(n, hostnames)
        except RequestError as exc:
            return AdminReply(400, error_body(str(exc)))
        except (RuntimeFailure, ConflictError, NotLeaderError, StaleLeaderError) as exc:
            return AdminReply(503, error_body(str(exc)))
        except StoreUnavailable as exc:
            return AdminReply(503, error_body(_store_down(exc)))
        return AdminReply(200, replicas_body(membership.names))

    async def _change(self, request: web.Request, op: str, too_many: str) -> web.Response:
        """Validate, then apply here (leader) or hand over to the leader (follower)."""
        try:
            n, hostnames = await parse_change(request, too_many)
        except RequestError as exc:
            return _reply(400, error_body(str(exc)))
        if self._leadership.is_leader:
            reply = await self.apply_change(op, n, hostnames)
        else:
            try:
                reply = await self._relay.forward(op, n, hostnames)
            except NotLeaderError as exc:
                reply = AdminReply(503, error_body(str(exc)))
            except StoreUnavailable as exc:
                reply = AdminReply(503, error_body(_store_down(exc)))
        return _reply(reply.status, reply.body)

    async def _membership(self) -> Membership:
        """The store's membership, or the ring this instance routes on when it is unreachable."""
        try:
            return await self._store.membership()
        except StoreUnavailable:
            return self._view.current.membership

    async def status(self, request: web.Request) -> web.Response:
        """Operator view: this instance's epoch, fingerprint and role; replicas; all instances.

        ``pid`` is known on the instance that started or adopted the replica (the leader).
        """
        snapshot = self._view.current
        try:
            alive = await self._store.alive()
            instances = await self._store.instances()
            store_ok = True
        except StoreUnavailable:
            alive, instances, store_ok = frozenset(), {}, False
        pids = {h.name: h.pid for h in await self._runtime.list()}
        replicas = [
            {
                "name": r.name,
                "server_id": server_id(r.name),
                "index": r.index,
                "weight": r.weight,
                "address": r.address,
                "alive": r.name in alive,
                "pid": pids.get(r.name),
            }
            for r in snapshot.membership.replicas
        ]
        body = {
            "instance": self._instance_id,
            "leader": self._leadership.is_leader,
            "store": "ok" if store_ok else "unavailable",
            "epoch": snapshot.epoch,
            "fingerprint": snapshot.fingerprint(),
            "target": snapshot.membership.target,
            "algorithm": self._algorithm,
            "replicas": replicas,
            "instances": [instances[i] for i in sorted(instances)],
        }
        return web.json_response(body)


def _store_down(exc: StoreUnavailable) -> str:
    return f"The shared state store is unavailable, so replicas cannot change now: {exc}"

"""The contract's admin API: ``GET /rep``, ``POST /add``, ``DELETE /rm`` (``POST /rm`` alias),
plus, for operators, ``GET /lb/status``, ``GET /lb/events`` (the latest changes and what
each moved), ``PUT /lb/settings`` (routing settings of every
instance) and ``PUT /lb/weight`` (one replica's weight; 0 drains it).

Owns the handlers and the mapping of errors to responses (what a body may carry is
``balancer.api.admin_input``). Every rejected request changes nothing and answers 4xx
``{"message": "<Error> …", "status": "failure"}``: 400 for a bad value (the two errors the
contract fixes use its exact strings), 413 for a body over 64 KiB, 401 for a change without the
admin token (only when one is configured), 409 for ``/add`` and ``/rm`` when another system runs
the replicas (``--runtime dns``: the message names it), and, through ``middleware``, 404/405 for
an unknown path or method. Every instance answers every
endpoint: a change that reaches a follower is authenticated there, then handed to the leader
through the relay and the leader's answer is replayed. When the shared store is unreachable,
reads answer from the ring this instance routes on and changes answer 503.
Must not import: redis, docker, ``balancer.http.frontend`` (the data path forwards admin
paths here; it is never called from here).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from balancer.api.admin_input import (
    MAX_WEIGHT,
    BodyTooLarge,
    json_object,
    parse_change,
    query_int,
    ring_cost_error,
    settings_change,
    shown,
)
from balancer.control.manager import ReplicaManager
from balancer.control.movement_log import KEEP_EVENTS
from balancer.errors import (
    ConflictError,
    NotLeaderError,
    RequestError,
    RuntimeFailure,
    StaleLeaderError,
    StoreUnavailable,
)
from balancer.hashing import RingSettings
from balancer.hashing.hashes import KEYED_HASHES
from balancer.http.stats import TrafficStats
from balancer.names import is_valid_name, server_id
from balancer.runtimes.base import Description, ReplicaRuntime
from balancer.runtimes.discovery import managed_by
from balancer.state.coordination import AdminRelay, AdminReply, Leadership
from balancer.state.store import (
    EventLog,
    InstanceRegistry,
    LivenessStore,
    Membership,
    MembershipSource,
)
from balancer.state.view import RingView
from balancer.wire import (
    ADD_TOO_MANY_NAMES,
    CONTENT_TYPE,
    RM_TOO_MANY_NAMES,
    error_body,
    message_body,
    replicas_body,
)

DESCRIBED_MAX_AGE_S = 1.0  # how old what /lb/status shows of the runtime's replicas may be

# The changes an admin token guards, as (method, route path); reads stay open.
GUARDED = frozenset(
    {
        ("POST", "/add"),
        ("DELETE", "/rm"),
        ("POST", "/rm"),
        ("PUT", "/lb/settings"),
        ("PUT", "/lb/weight"),
    }
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Set on every request of the admin app: whether changes need the admin token here (the OpenAPI
# document served at /lb/openapi.json says so when they do).
ADMIN_TOKEN_SET = web.RequestKey("admin_token_set", bool)


def _reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type=CONTENT_TYPE, headers=headers)


def _refused(exc: RequestError) -> web.Response:
    return _reply(413 if isinstance(exc, BodyTooLarge) else 400, error_body(str(exc)))


class AdminState(MembershipSource, LivenessStore, InstanceRegistry, EventLog, Protocol):
    """The pieces of shared state the admin API reads (its changes go through the manager)."""


class AdminApi:
    """Handlers bound to one manager, store and ring view."""

    def __init__(
        self,
        manager: ReplicaManager,
        store: AdminState,
        view: RingView,
        runtime: ReplicaRuntime,
        stats: TrafficStats,
        *,
        leadership: Leadership,
        relay: AdminRelay,
        instance_id: str = "",
        admin_token: str = "",
    ) -> None:
        self._manager = manager
        self._store = store
        self._view = view
        self._runtime = runtime
        self._managed_by = managed_by(runtime)  # "": this balancer starts its replicas
        self._stats = stats
        self._leadership = leadership
        self._relay = relay
        self._instance_id = instance_id
        self._token = admin_token.encode()  # empty: changes need no token
        # /lb/status is unauthenticated: the runtime (a Docker API call) is asked at most once
        # a second, by one request at a time, and its failure is not a 500.
        self._described_lock = asyncio.Lock()
        self._described_at = -DESCRIBED_MAX_AGE_S
        self._described_epoch = -1  # a new ring (a replica started or gone) asks again at once
        self._described: dict[str, Description] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/rep", self.rep),
            web.post("/add", self.add),
            web.delete("/rm", self.rm),
            web.post("/rm", self.rm),
            web.put("/lb/settings", self.put_settings),
            web.put("/lb/weight", self.put_weight),
            web.get("/lb/status", self.status),
            web.get("/lb/events", self.events),
        ]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """For the whole admin app: the admin token on changes (401 before anything is read)
        and the errors aiohttp raises itself (unknown path 404, method 405, body 413) in the
        contract's error shape."""
        request[ADMIN_TOKEN_SET] = bool(self._token)
        if self._token and _route_key(request) in GUARDED:
            refusal = self._check_token(request)
            if refusal is not None:
                return refusal
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _http_error(request, exc)

    def _check_token(self, request: web.Request) -> web.Response | None:
        """None when the request carries the admin token, else the 401 answer."""
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            message = "This change needs the admin token: send 'Authorization: Bearer <token>'"
        else:
            try:
                given = credentials.strip().encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                given = b""
            if hmac.compare_digest(given, self._token):
                return None
            message = "The admin token is not valid"
        return _reply(401, error_body(message), {"WWW-Authenticate": "Bearer"})

    async def rep(self, request: web.Request) -> web.Response:
        return _reply(200, replicas_body((await self._membership()).names))

    async def add(self, request: web.Request) -> web.Response:
        try:
            n, hostnames = await parse_change(request, ADD_TOO_MANY_NAMES)
        except RequestError as exc:
            return _refused(exc)
        return await self._change("add", {"n": n, "hostnames": hostnames})

    async def rm(self, request: web.Request) -> web.Response:
        try:
            n, hostnames = await parse_change(request, RM_TOO_MANY_NAMES)
        except RequestError as exc:
            return _refused(exc)
        return await self._change("rm", {"n": n, "hostnames": hostnames})

    async def put_settings(self, request: web.Request) -> web.Response:
        """Change routing settings on every instance: a JSON object of ``RingSettings`` fields
        (e.g. ``{"algorithm": "maglev"}``); the answer is the settings now in force."""
        try:
            data = await json_object(request)
            current = self._view.current
            # Refuse early, change nothing.
            too_costly = ring_cost_error(
                settings_change(data, current.settings), current.membership.members()
            )
            if too_costly:
                raise RequestError(f"Settings refused: {too_costly}")
        except ValueError as exc:
            return _reply(400, error_body(str(exc)))
        except RequestError as exc:
            return _refused(exc)
        return await self._change("settings", data)

    async def put_weight(self, request: web.Request) -> web.Response:
        """``{"hostname": "Server 1", "weight": 0}``: set one replica's weight (0 drains it)."""
        try:
            data = await json_object(request)
            hostname, weight = data.get("hostname"), data.get("weight")
            if not isinstance(hostname, str) or not is_valid_name(hostname):
                raise RequestError("'hostname' must be the name of a replica")
            if isinstance(weight, bool) or not isinstance(weight, int):
                raise RequestError(f"'weight' must be an integer in 0..{MAX_WEIGHT}")
            if not 0 <= weight <= MAX_WEIGHT:
                raise RequestError(f"'weight' must be an integer in 0..{MAX_WEIGHT}")
            current = self._view.current
            members = [
                dataclasses.replace(m, weight=weight)
                if server_id(m.name) == server_id(hostname)
                else m
                for m in current.membership.members()
            ]
            too_costly = ring_cost_error(current.settings, members)
            if too_costly:
                raise RequestError(f"Weight refused: {too_costly}")
        except RequestError as exc:
            return _refused(exc)
        return await self._change("weight", {"hostname": hostname, "weight": weight})

    async def apply(self, op: str, args: dict[str, Any]) -> AdminReply:
        """Apply a validated change here, on the leader (also for changes handed over)."""
        try:
            return await self._apply(op, args)
        except (RequestError, ValueError) as exc:
            return AdminReply(400, error_body(str(exc)))
        except (RuntimeFailure, ConflictError, NotLeaderError, StaleLeaderError) as exc:
            return AdminReply(503, error_body(str(exc)))
        except StoreUnavailable as exc:
            return AdminReply(503, error_body(_store_down(exc)))

    def _managed_elsewhere(self, op: str) -> AdminReply | None:
        """The 409 of ``/add`` and ``/rm`` when another system runs the replicas."""
        if op not in ("add", "rm") or not self._managed_by:
            return None
        message = (
            f"Replicas are discovered from {self._managed_by}; add or remove them there "
            "(this balancer follows what it lists)"
        )
        return AdminReply(409, error_body(message))

    async def _apply(self, op: str, args: dict[str, Any]) -> AdminReply:
        refused = self._managed_elsewhere(op)  # also a change a follower handed over
        if refused is not None:
            return refused
        if op in ("add", "rm"):
            apply = self._manager.add if op == "add" else self._manager.remove
            membership = await apply(int(args["n"]), list(args["hostnames"]))
            return AdminReply(200, replicas_body(membership.names))
        if op == "settings":
            current = await self._store.membership()
            base = current.settings or self._view.current.settings
            membership = await self._manager.set_settings(settings_change(args, base))
            return AdminReply(200, message_body(self._settings_body(membership)))
        if op == "weight":
            hostname = str(args["hostname"])
            current = await self._store.membership()
            name = next((n for n in current.names if server_id(n) == server_id(hostname)), hostname)
            membership = await self._manager.set_weight(name, int(args["weight"]))
            return AdminReply(200, message_body(self._weights_body(membership)))
        raise RequestError(f"unknown change {op!r}")

    async def _change(self, op: str, args: dict[str, Any]) -> web.Response:
        """Apply here (leader) or hand over to the leader (follower)."""
        refused = self._managed_elsewhere(op)
        if refused is not None:
            reply = refused
        elif self._leadership.is_leader:
            reply = await self.apply(op, args)
        else:
            try:
                reply = await self._relay.forward(op, args)
            except NotLeaderError as exc:
                reply = AdminReply(503, error_body(str(exc)))
            except StoreUnavailable as exc:
                reply = AdminReply(503, error_body(_store_down(exc)))
        return _reply(reply.status, reply.body)

    def _settings_body(self, membership: Membership) -> dict[str, Any]:
        settings = membership.settings or self._view.current.settings
        return {"epoch": membership.epoch, "settings": public_settings(settings)}

    @staticmethod
    def _weights_body(membership: Membership) -> dict[str, Any]:
        weights = {r.name: r.weight for r in membership.replicas}
        return {"epoch": membership.epoch, "weights": weights}

    async def _membership(self) -> Membership:
        """The store's membership, or the ring this instance routes on when it is unreachable."""
        try:
            return await self._store.membership()
        except StoreUnavailable:
            return self._view.current.membership

    async def events(self, request: web.Request) -> web.Response:
        """The latest membership changes with the share of keys each moved, newest first."""
        try:
            limit = query_int(request.query.get("limit", "50"), "limit", 1, KEEP_EVENTS)
        except RequestError as exc:
            return _refused(exc)
        try:
            events = await self._store.events(limit)
        except StoreUnavailable as exc:
            return _reply(503, error_body(f"The shared state store is unavailable: {exc}"))
        return _reply(200, message_body({"events": events}))

    async def _described_replicas(self, epoch: int) -> dict[str, Description]:
        """What the runtime describes of each replica it runs (``pid``, ``container`` …)."""
        async with self._described_lock:
            age_s = time.monotonic() - self._described_at
            if epoch != self._described_epoch or age_s >= DESCRIBED_MAX_AGE_S:
                try:
                    handles = await self._runtime.list()
                except RuntimeFailure:
                    handles = []
                self._described = {h.name: self._runtime.describe(h) for h in handles}
                self._described_at, self._described_epoch = time.monotonic(), epoch
            return self._described

    async def status(self, request: web.Request) -> web.Response:
        """Operator view: this instance's epoch, fingerprint and role; replicas; all instances.

        ``pid`` (the process runtime; null elsewhere) and ``container`` (Docker) are what the
        runtime describes of a replica, known on the instance that started or adopted it (the
        leader).
        """
        snapshot = self._view.current
        try:
            alive = await self._store.alive()
            instances = await self._store.instances()
            store_ok = True
        except StoreUnavailable:
            alive, instances, store_ok = frozenset(), {}, False
        described = await self._described_replicas(snapshot.epoch)
        replicas = [
            {
                "name": r.name,
                "server_id": server_id(r.name),
                "index": r.index,
                "weight": r.weight,
                "address": r.address,
                "alive": r.name in alive,
                "pid": None,
                **described.get(r.name, {}),
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
            "algorithm": snapshot.settings.algorithm,
            "settings": public_settings(snapshot.settings),
            "shared_settings": snapshot.membership.settings is not None,
            "replicas": replicas,
            "instances": [instances[i] for i in sorted(instances)],
        }
        return web.json_response(body)


def public_settings(settings: RingSettings) -> dict[str, Any]:
    """Routing settings as operators see them: a keyed hash's seed is a secret and is hidden
    (xxh3's seed is a fixed, public constant by default)."""
    shown = dataclasses.asdict(settings)
    if settings.hash_name in KEYED_HASHES:
        shown["hash_seed"] = "(secret)"
    return shown


def _store_down(exc: StoreUnavailable) -> str:
    return f"The shared state store is unavailable, so replicas cannot change now: {exc}"


def _route_key(request: web.Request) -> tuple[str, str | None]:
    """(method, the path of the route the request matched) — None for no route."""
    route = request.match_info.route
    resource = route.resource
    return route.method, None if resource is None else resource.canonical


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """One of aiohttp's own error answers, in the contract's error shape."""
    path = shown(request.path, 80)
    headers = {}
    if isinstance(exc, web.HTTPNotFound):
        message = f"No admin endpoint {path}; GET /lb/openapi.json lists them"
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"{shown(request.method, 20)} is not allowed on {path}; allowed: {allowed}"
        headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        message = "Request body is too large"
    else:
        message = exc.reason
    return _reply(exc.status, error_body(message), headers)

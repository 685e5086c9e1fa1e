"""Read-only questions about routing, answered from the ring this instance routes on.

Owns ``GET /lb/settings`` (the routing settings in force), ``GET /lb/lookup?key=…`` (a key's
owner and the next candidates a retry or a bounded-load spill would use) and
``GET /lb/simulate`` (what share of keys a change would move, before anyone applies it):
``add=<n>`` new replicas, ``remove=<name>,…``, ``weight=<name>:<w>,…``, alone or together.
Nothing here changes state or talks to the store.
Must not import: redis, docker.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from aiohttp import web

from balancer.admin import public_settings
from balancer.admin_input import MAX_WEIGHT, ring_cost_error
from balancer.errors import RequestError
from balancer.hashing import Member, NoReplicasError, build_ring, next_state
from balancer.hashing.movement import ideal_share, moved_share
from balancer.membership import RingView
from balancer.names import server_id
from balancer.wire import CONTENT_TYPE, error_body, message_body

MAX_CANDIDATES = 16
MAX_SIMULATED_ADDS = 1000
# Rendezvous is simulated by sampling keys, each over every member: about 30 ms per member.
MAX_SAMPLED_MEMBERS = 64


class RoutingApi:
    """Handlers over one ring view."""

    def __init__(self, view: RingView) -> None:
        self._view = view
        self._simulating = asyncio.Lock()  # one at a time: a sampled simulation costs CPU

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/lb/settings", self.settings),
            web.get("/lb/lookup", self.lookup),
            web.get("/lb/simulate", self.simulate),
        ]

    async def settings(self, request: web.Request) -> web.Response:
        snapshot = self._view.current
        return _ok(
            {
                "epoch": snapshot.epoch,
                "shared": snapshot.membership.settings is not None,
                "settings": public_settings(snapshot.settings),
            }
        )

    async def lookup(self, request: web.Request) -> web.Response:
        key = request.query.get("key")
        if key is None:
            return _bad("'key' is required: GET /lb/lookup?key=<routing key>")
        try:
            count = _int(request.query.get("count", "3"), "count", 1, MAX_CANDIDATES)
        except RequestError as exc:
            return _bad(str(exc))
        snapshot = self._view.current
        try:
            candidates = snapshot.ring.candidates(key, count)
        except NoReplicasError:
            return _reply(503, error_body("No replicas available"))
        return _ok(
            {
                "key": key,
                "epoch": snapshot.epoch,
                "algorithm": snapshot.settings.algorithm,
                "owner": candidates[0],
                "address": snapshot.addresses[candidates[0]],
                "candidates": candidates,
            }
        )

    async def simulate(self, request: web.Request) -> web.Response:
        snapshot = self._view.current
        before = snapshot.membership.members()
        try:
            after = _changed_members(before, request.query)
        except RequestError as exc:
            return _bad(str(exc))
        settings = snapshot.settings
        too_costly = ring_cost_error(settings, after)
        if settings.algorithm == "rendezvous" and len(after) > MAX_SAMPLED_MEMBERS:
            too_costly = f"rendezvous is simulated for at most {MAX_SAMPLED_MEMBERS} replicas"
        if too_costly:
            return _bad(f"Not simulated: {too_costly}")

        def measure() -> tuple[int, float]:
            state = next_state(before, snapshot.membership.ring_state, after, settings)
            new_ring = build_ring(after, settings, state)
            return len(new_ring.members), moved_share(snapshot.ring, new_ring)

        async with self._simulating:  # off the event loop: the data path keeps running
            members_after, moved = await asyncio.to_thread(measure)
        ideal = ideal_share(before, after)
        return _ok(
            {
                "epoch": snapshot.epoch,
                "algorithm": settings.algorithm,
                "replicas_before": len(snapshot.ring.members),
                "replicas_after": members_after,
                "moved_share": round(moved, 6),
                "ideal_share": round(ideal, 6),
                "excess": None if ideal == 0 else round(moved / ideal, 4),
            }
        )


def _changed_members(before: list[Member], query: Any) -> list[Member]:
    """``before`` with the query's ``remove``, ``weight`` and ``add`` applied, in that order."""
    by_id = {server_id(m.name): m for m in before}
    if not any(k in query for k in ("add", "remove", "weight")):
        raise RequestError("give at least one of add=<n>, remove=<name>,…, weight=<name>:<w>,…")
    after = dict(by_id)
    for raw in _items(query.get("remove", "")):
        if server_id(raw) not in after:
            raise RequestError(f"Unknown replica hostname: {raw}")
        del after[server_id(raw)]
    for raw in _items(query.get("weight", "")):
        name, sep, value = raw.rpartition(":")
        if not sep or server_id(name) not in after:
            raise RequestError(f"'weight' takes <name>:<weight> of a current replica, not {raw!r}")
        member = after[server_id(name)]
        after[server_id(name)] = dataclasses.replace(
            member, weight=_int(value, "weight", 0, MAX_WEIGHT)
        )
    adds = _int(query.get("add", "0"), "add", 0, MAX_SIMULATED_ADDS)
    used = {m.index for m in after.values()}
    for i in range(adds):
        index = next(j for j in range(1, len(used) + 2) if j not in used)
        used.add(index)
        name = f"simulated-{i + 1}"
        after[name] = Member(name, index)
    return list(after.values())


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _int(text: str, name: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise RequestError(f"'{name}' must be an integer in {low}..{high}")
    return value


def _ok(body: dict[str, Any]) -> web.Response:
    return _reply(200, message_body(body))


def _bad(message: str) -> web.Response:
    return _reply(400, error_body(message))


def _reply(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type=CONTENT_TYPE)

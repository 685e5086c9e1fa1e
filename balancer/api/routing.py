"""Read-only questions about routing, answered from the ring this instance routes on.

Owns ``GET /lb/settings`` (the routing settings in force), ``GET /lb/lookup?key=…`` (a key's
owner and the next candidates a retry or a bounded-load spill would use) and
``GET /lb/simulate`` (what share of keys a change would move, before anyone applies it):
``add=<n>`` new replicas, ``remove=<name>,…``, ``weight=<name>:<w>,…``, alone or together.
Nothing here changes state or talks to the store.

Every read here is cheap by construction, as it is open to anyone who reaches the port: a lookup
costs what routing one request costs (``count`` is at most ``MAX_CANDIDATES``); a simulation
takes at most ``max_replicas`` members after the change and list items, is refused (400) when
the rings would be too costly to compare (``balancer.api.simulation``), and goes through a
``SimulationGate``: answers cached per (ring, resulting member set), one computation per
question and one at a time, at most a tenth of the process's time; a caller that gets no turn
within two seconds is answered 503 with ``Retry-After``.
Must not import: redis, docker.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from balancer.api.admin import public_settings
from balancer.api.admin_input import MAX_WEIGHT, ring_cost_error
from balancer.api.simulation import Busy, Clock, SimulationGate, measure, simulation_cost_error
from balancer.errors import RequestError
from balancer.hashing import Member, NoReplicasError
from balancer.hashing.movement import ideal_share
from balancer.names import server_id
from balancer.state.view import RingView, Snapshot
from balancer.wire import CONTENT_TYPE, error_body, message_body

MAX_CANDIDATES = 16
MAX_SIMULATED_ADDS = 1000  # whatever max_replicas says (a simulation stays within it too)
DEFAULT_MAX_REPLICAS = 64  # Settings.max_replicas' default


class RoutingApi:
    """Handlers over one ring view."""

    def __init__(
        self,
        view: RingView,
        *,
        max_replicas: int = DEFAULT_MAX_REPLICAS,
        gate: SimulationGate[dict[str, Any]] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """Args:
        max_replicas: the most replicas a simulated change may leave (``/add`` refuses more).
        gate: shares and throttles simulations (default: ``SimulationGate`` on ``clock``).
        """
        self._view = view
        self._max_replicas = max_replicas
        self._gate: SimulationGate[dict[str, Any]] = gate or SimulationGate(clock=clock)

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
            after = _changed_members(before, request.query, self._max_replicas)
        except RequestError as exc:
            return _bad(str(exc))
        settings = snapshot.settings
        too_costly = ring_cost_error(settings, after) or simulation_cost_error(
            settings, before, after
        )
        if too_costly:
            return _bad(f"Not simulated: {too_costly}")
        # The same question on the same ring has the same answer: the ring's epoch and
        # fingerprint (its answers and state) and settings, and the member set asked about.
        key = (snapshot.epoch, snapshot.fingerprint(), settings, frozenset(after))
        answer = await self._gate.get(key, lambda: _simulation(snapshot, before, after))
        if isinstance(answer, Busy):
            return _reply(
                503,
                error_body(
                    "Not simulated now: simulations have used their share of this instance's "
                    f"CPU; retry in {answer.retry_after_s} s"
                ),
                {"Retry-After": str(answer.retry_after_s)},
            )
        return _ok(answer)


def _simulation(snapshot: Snapshot, before: list[Member], after: list[Member]) -> dict[str, Any]:
    """The answer of ``/lb/simulate`` (runs in the gate's thread)."""
    members_after, moved = measure(snapshot, after)
    ideal = ideal_share(before, after)
    return {
        "epoch": snapshot.epoch,
        "algorithm": snapshot.settings.algorithm,
        "replicas_before": len(snapshot.ring.members),
        "replicas_after": members_after,
        "moved_share": round(moved, 6),
        "ideal_share": round(ideal, 6),
        "excess": None if ideal == 0 else round(moved / ideal, 4),
    }


def _changed_members(
    before: list[Member], query: Mapping[str, str], max_replicas: int
) -> list[Member]:
    """``before`` with the query's ``remove``, ``weight`` and ``add`` applied, in that order.

    Raises:
        RequestError: a bad value, or more than ``max_replicas`` items in a list or members
            after the change (no deployment can get there: ``/add`` refuses it).
    """
    by_id = {server_id(m.name): m for m in before}
    if not any(k in query for k in ("add", "remove", "weight")):
        raise RequestError("give at least one of add=<n>, remove=<name>,…, weight=<name>:<w>,…")
    removed, weighted = _items(query.get("remove", "")), _items(query.get("weight", ""))
    adds = _int(query.get("add", "0"), "add", 0, MAX_SIMULATED_ADDS)
    if max(len(removed), len(weighted)) > max_replicas:
        raise RequestError(f"Not simulated: a list of more than max_replicas={max_replicas} items")
    after = dict(by_id)
    for raw in removed:
        if server_id(raw) not in after:
            raise RequestError(f"Unknown replica hostname: {raw}")
        del after[server_id(raw)]
    for raw in weighted:
        name, sep, value = raw.rpartition(":")
        if not sep or server_id(name) not in after:
            raise RequestError(f"'weight' takes <name>:<weight> of a current replica, not {raw!r}")
        member = after[server_id(name)]
        after[server_id(name)] = dataclasses.replace(
            member, weight=_int(value, "weight", 0, MAX_WEIGHT)
        )
    if len(after) + adds > max_replicas:
        raise RequestError(
            f"Not simulated: {len(after) + adds} replicas after the change; at most "
            f"max_replicas={max_replicas} can run"
        )
    used = {m.index for m in after.values()}
    free = (j for j in range(1, len(used) + adds + 1) if j not in used)  # one pass, not N²
    for i, index in zip(range(adds), free, strict=False):
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


def _reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type=CONTENT_TYPE, headers=headers)

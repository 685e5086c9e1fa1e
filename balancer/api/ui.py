"""The live ring page: ``GET /ui`` and the JSON it draws from, ``GET /lb/ring?bins=N``.

Owns ``UiApi``. ``/lb/ring`` answers, for the ring this instance routes on: epoch, algorithm,
fingerprint, the ring as arcs over [0, 1) of the hash space (``balancer.hashing.arcs``), each
member's share of the key space, and every replica's weight, request count and requests in
flight (``merged(stats)``: this process and its worker processes). ``/ui`` is one
self-contained HTML page (``ui_page.html``, inline CSS and JS, no network besides this
balancer) that polls ``/lb/ring``, ``/lb/status`` and ``/lb/events`` every second.

Arcs are computed off the event loop, one computation at a time (milliseconds to tens of
milliseconds, about a second for rendezvous at 64 replicas) and kept per (snapshot, bins) until
the ring changes. ``bins`` is rounded up to a power of two from 64 to 4096, so an unauthenticated
client can cause at most seven computations per ring, however many values it asks for.
Nothing here changes state or talks to the store.
Must not import: redis, docker.
"""

from __future__ import annotations

import asyncio
import functools
from importlib import resources

from aiohttp import web

from balancer.hashing.arcs import DEFAULT_BINS, RingArcs, ring_arcs
from balancer.http.stats import TrafficStats, merged
from balancer.state.view import RingView, Snapshot
from balancer.wire import CONTENT_TYPE, error_body, message_body

MAX_BINS = 4096
MIN_BINS = 64  # resolutions served: the powers of two MIN_BINS..MAX_BINS (7 per ring)
_DIGITS = 7  # fractions are rounded for the wire: 1e-7 of a turn is far below a pixel


@functools.cache
def page() -> bytes:
    """The page's HTML, a package resource."""
    return resources.files("balancer.api").joinpath("ui_page.html").read_bytes()


class UiApi:
    """``GET /ui`` and ``GET /lb/ring`` over one ring view and this process's counters."""

    def __init__(self, view: RingView, stats: TrafficStats) -> None:
        self._view = view
        self._stats = stats
        self._lock = asyncio.Lock()  # one computation at a time; the others wait for its cache
        self._cache: dict[int, RingArcs] = {}
        self._cached_for: Snapshot | None = None

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/ui", self.ui), web.get("/lb/ring", self.ring)]

    async def ui(self, request: web.Request) -> web.Response:
        try:
            body = page()
        except OSError as exc:  # an install without the package data
            return web.Response(status=500, text=f"the page is not installed: {exc}")
        return web.Response(
            body=body,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def ring(self, request: web.Request) -> web.Response:
        raw = request.query.get("bins", str(DEFAULT_BINS))
        try:
            bins = int(raw)
        except ValueError:
            bins = 0
        if not 1 <= bins <= MAX_BINS:
            return _reply(400, error_body(f"'bins' must be an integer in 1..{MAX_BINS}"))
        bins = max(MIN_BINS, 1 << (bins - 1).bit_length())  # the resolution served
        snapshot = self._view.current
        drawn = await self._arcs(snapshot, bins)
        totals = merged(self._stats)["replicas"]
        replicas = []
        for r in snapshot.membership.replicas:
            counts = totals.get(r.name, {})
            replicas.append(
                {
                    "name": r.name,
                    "weight": r.weight,
                    "address": r.address,
                    "share": round(drawn.shares.get(r.name, 0.0), _DIGITS),
                    "requests": counts.get("requests", 0),
                    "in_flight": counts.get("in_flight", 0),
                }
            )
        body = {
            "epoch": snapshot.epoch,
            "algorithm": snapshot.settings.algorithm,
            "fingerprint": snapshot.fingerprint(),
            "bins": bins,
            "method": drawn.method,
            "exact": drawn.exact,
            "arcs": [[round(a.start, _DIGITS), round(a.end, _DIGITS), a.owner] for a in drawn.arcs],
            "shares": {name: round(s, _DIGITS) for name, s in drawn.shares.items()},
            "replicas": replicas,
        }
        return _reply(200, message_body(body))

    async def _arcs(self, snapshot: Snapshot, bins: int) -> RingArcs:
        async with self._lock:
            if self._cached_for is not snapshot:
                self._cache.clear()
                self._cached_for = snapshot
            found = self._cache.get(bins)
            if found is None:
                found = await asyncio.to_thread(ring_arcs, snapshot.ring, bins)
                self._cache[bins] = found
            return found


def _reply(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type=CONTENT_TYPE)

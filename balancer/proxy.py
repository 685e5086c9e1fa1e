"""The data path: choose a replica for a request, forward it, relay the answer.

Owns the seam the next issue replaces with a protocol-level forwarder: ``Router`` (request key →
ordered candidate addresses, from the current ring snapshot) and ``Proxy`` (forward over a pooled
keep-alive ``ClientSession`` with explicit timeouts; retry the next candidate when a replica
refuses or drops the connection before answering; map upstream 404 to the contract's error,
timeouts to 504 and other upstream failures to 502). The admin API never reaches in here.
Must not import: redis, docker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from balancer.hashing import NoReplicasError
from balancer.membership import RingView
from balancer.wire import CONTENT_TYPE, error_body, no_endpoint_message

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1 connection-specific fields, never forwarded by a proxy.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
KeyFn = Callable[[web.BaseRequest], str]


def error_response(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=error_body(message), content_type=CONTENT_TYPE)


class Router:
    """Request → (key, candidate (name, address) pairs in preference order)."""

    def __init__(self, view: RingView, key_fn: KeyFn, retries: int) -> None:
        self._view = view
        self._key_fn = key_fn
        self._tries = 1 + retries

    def choose(self, request: web.BaseRequest) -> list[tuple[str, str]]:
        """Raises NoReplicasError when the ring is empty."""
        snapshot = self._view.current
        names = snapshot.ring.candidates(self._key_fn(request), self._tries)
        return [(name, snapshot.addresses[name]) for name in names]


class Proxy:
    """Forwards requests to the replicas the router picks (see the module docstring)."""

    def __init__(self, router: Router, session: aiohttp.ClientSession) -> None:
        self._router = router
        self._session = session

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            candidates = self._router.choose(request)
        except NoReplicasError:
            return error_response(503, "No replicas available")
        body = await request.read()
        headers = _forward_headers(request)
        retry_any = request.method in _IDEMPOTENT
        last_error = "no replica answered"
        for name, address in candidates:
            try:
                return await self._forward(request, address, headers, body)
            except aiohttp.ClientConnectorError as exc:  # nothing was sent: always safe to retry
                last_error = f"replica {name} refused the connection"
                log.warning("%s: %s", last_error, exc)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                last_error = f"replica {name} dropped the connection"
                log.warning("%s: %s", last_error, exc)
                if not retry_any:
                    break
            except TimeoutError:
                return error_response(504, f"Replica {name} timed out")
            except aiohttp.ClientError as exc:
                log.warning("replica %s failed: %r", name, exc)
                return error_response(502, f"Replica {name} failed: {type(exc).__name__}")
        return error_response(502, last_error[0].upper() + last_error[1:])

    async def _forward(
        self, request: web.Request, address: str, headers: CIMultiDict[str], body: bytes
    ) -> web.Response:
        url = f"http://{address}{request.rel_url}"
        async with self._session.request(
            request.method, url, headers=headers, data=body or None, allow_redirects=False
        ) as upstream:
            payload = await upstream.read()
            if upstream.status == 404:
                return error_response(400, no_endpoint_message(request.path))
            out = CIMultiDict(
                (k, v)
                for k, v in upstream.headers.items()
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
            )
            return web.Response(status=upstream.status, body=payload, headers=out)


def _forward_headers(request: web.Request) -> CIMultiDict[str]:
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
    headers.pop("Content-Length", None)  # recomputed from the body we send
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    return headers

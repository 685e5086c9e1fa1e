"""Loadgen's client for the balancer's admin endpoints: ``/rep``, ``/add``, ``/rm``,
``/lb/settings``, ``/lb/status``.

Owns scaling to a replica count the way the reference scale drivers do (``POST /add {"n": d,
"hostnames": []}``, ``DELETE /rm {"n": d}``), putting a membership back by name afterwards, and
reading/switching the routing algorithm. Raises ``AdminError`` on any answer it did not expect.
Must not import anything from ``balancer`` or ``server``: it speaks only HTTP.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from loadgen.contract import replicas_shape_error

ADMIN_TIMEOUT = aiohttp.ClientTimeout(total=60)  # /add waits for the new replicas' heartbeats


class AdminError(RuntimeError):
    """The balancer answered an admin request with something else than expected."""


def base_url(url: str) -> str:
    """``http://host:port`` of ``url`` (a path such as ``/home`` is dropped)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.netloc:
        raise ValueError(f"not a balancer URL: {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # parsed JSON, or the text when it is not JSON
    text: str


class Admin:
    """Admin calls on one balancer over one session."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None = None) -> None:
        """``token``: the balancer's admin token (``--admin-token``), sent with every change;
        None reads ``LB_ADMIN_TOKEN`` from the environment (unset or empty: none is sent)."""
        self.session = session
        self.base = base_url(url)
        token = os.environ.get("LB_ADMIN_TOKEN", "") if token is None else token
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, payload: Any = None) -> Answer:
        """One request; ``payload`` is sent as a JSON body. The answer's body is parsed JSON
        when it is JSON, else its text."""
        headers = self._auth if method != "GET" else {}
        async with self.session.request(
            method, self.base + path, json=payload, headers=headers, timeout=ADMIN_TIMEOUT
        ) as resp:
            text = await resp.text()
            try:
                body: Any = json.loads(text)
            except ValueError:
                body = text
            return Answer(resp.status, body, text)

    async def _expect(self, method: str, path: str, payload: Any = None) -> Any:
        answer = await self.call(method, path, payload)
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise AdminError(f"{method} {path} {payload or ''} → {answer.status} {answer.text}")
        return answer.body

    async def replicas(self) -> list[str]:
        """The names ``/rep`` lists."""
        body = await self._expect("GET", "/rep")
        if (why := replicas_shape_error(body)) is not None:
            raise AdminError(f"GET /rep: {why}")
        return list(body["message"]["replicas"])

    async def _change(
        self, method: str, path: str, payload: dict[str, Any], want: int
    ) -> list[str]:
        body = await self._expect(method, path, payload)
        if (why := replicas_shape_error(body)) is not None:
            raise AdminError(f"{method} {path}: {why}")
        names: list[str] = body["message"]["replicas"]
        if len(names) != want:
            raise AdminError(f"{method} {path} {payload}: N is {len(names)}, expected {want}")
        return names

    async def add(self, n: int, hostnames: list[str] | None = None) -> list[str]:
        before = len(await self.replicas())
        return await self._change(
            "POST", "/add", {"n": n, "hostnames": hostnames or []}, before + n
        )

    async def rm(self, n: int, hostnames: list[str] | None = None) -> list[str]:
        before = len(await self.replicas())
        body = {"n": n} if not hostnames else {"n": n, "hostnames": hostnames}
        return await self._change("DELETE", "/rm", body, before - n)

    async def scale_to(self, n: int) -> list[str]:
        """Reach N = ``n`` like the reference scale drivers; the names ``/rep`` then lists."""
        current = await self.replicas()
        if n > len(current):
            return await self.add(n - len(current))
        if n < len(current):
            return await self.rm(len(current) - n)
        return current

    async def restore(self, names: list[str]) -> list[str]:
        """Put the membership back to ``names``: remove the others by name, re-add the missing
        ones by name; when that is refused, at least N is put back."""
        current = await self.replicas()
        extra = [x for x in current if x not in names]
        missing = [x for x in names if x not in current]
        try:
            if extra:
                await self.rm(len(extra), extra)
            if missing:
                await self.add(len(missing), missing)
        except AdminError:
            return await self.scale_to(len(names))
        return await self.replicas()

    async def settings(self) -> dict[str, Any]:
        """The routing settings in force (``GET /lb/settings`` → ``message.settings``)."""
        body = await self._expect("GET", "/lb/settings")
        settings = body.get("message", {}).get("settings")
        if not isinstance(settings, dict) or "algorithm" not in settings:
            raise AdminError(f"GET /lb/settings: no settings.algorithm in {body}")
        return settings

    async def set_algorithm(self, algorithm: str) -> dict[str, Any]:
        """``PUT /lb/settings {"algorithm": ...}``; the settings now in force."""
        body = await self._expect("PUT", "/lb/settings", {"algorithm": algorithm})
        settings = body.get("message", {}).get("settings")
        if body.get("status") != "successful" or not isinstance(settings, dict):
            raise AdminError(f"PUT /lb/settings {algorithm!r}: {body}")
        if settings.get("algorithm") != algorithm:
            raise AdminError(f"PUT /lb/settings {algorithm!r}: now {settings.get('algorithm')!r}")
        return settings

    async def status(self, url: str | None = None) -> dict[str, Any]:
        """``GET /lb/status`` of this balancer (or of the instance at ``url``)."""
        if url is None:
            return dict(await self._expect("GET", "/lb/status"))
        return dict(await Admin(self.session, url)._expect("GET", "/lb/status"))

"""HTTP helpers of the Swarm tests: calls to the balancers' published ports and a bounded load."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.swarm.deployment import ADMIN_TOKEN

Json = dict[str, Any]
SERVER_PREFIX = "Hello from Server: "


def url(port: int, path: str, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}{path}"


async def call(
    s: aiohttp.ClientSession,
    method: str,
    port: int,
    path: str,
    body: Json | None = None,
    host: str = "127.0.0.1",
) -> tuple[int, Json]:
    headers = {} if method == "GET" else {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with s.request(method, url(port, path, host), json=body, headers=headers) as resp:
        return resp.status, json.loads(await resp.read())


async def rep(s: aiohttp.ClientSession, port: int, host: str = "127.0.0.1") -> Json:
    code, doc = await call(s, "GET", port, "/rep", host=host)
    assert code == 200, doc
    return doc["message"]  # type: ignore[no-any-return]


async def leader_of(s: aiohttp.ClientSession, ports: list[int], timeout_s: float = 15.0) -> str:
    """The instance id that ``/lb/status`` of every port in ``ports`` names as the one leader."""
    started = time.monotonic()
    seen: list[Any] = []
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            leaders = set()
            for port in ports:
                _, doc = await call(s, "GET", port, "/lb/status")
                found = [i["id"] for i in doc["instances"] if i["leader"]]
                seen.append(found)
                leaders.add(tuple(found))
            if len(leaders) == 1 and len(found) == 1:
                return str(found[0])
        await asyncio.sleep(0.1)
    raise AssertionError(f"no single leader within {timeout_s}s: {seen[-4:]}")


async def poll(
    check: Callable[[], Awaitable[bool]], timeout_s: float, every_s: float = 0.1
) -> float | None:
    """Poll ``check`` until true: the seconds it took, or None after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, AssertionError):
            if await check():
                return time.monotonic() - started
        await asyncio.sleep(every_s)
    return None


def served_by(body: Json) -> str | None:
    message = body.get("message")
    if isinstance(message, str) and message.startswith(SERVER_PREFIX):
        return message[len(SERVER_PREFIX) :]
    return None


@dataclass
class Load:
    """``loops`` client loops of ``GET /home?id=<i>`` over ``ports``, bounded in time: every
    request's key, who served it, and every failure with its time."""

    ports: list[int]
    loops: int = 4
    max_s: float = 30.0
    ok: int = 0
    served: dict[int, str] = field(default_factory=dict)  # key → server id (last answer)
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[tuple[float, int, str]] = field(default_factory=list)  # (time, key, what)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    keys: int = 400  # each loop cycles over its share of this many keys
    host: str = "127.0.0.1"

    async def run(self, s: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        await asyncio.gather(*(self._loop(s, n, started) for n in range(self.loops)))

    async def _loop(self, s: aiohttp.ClientSession, n: int, started: float) -> None:
        i = 0
        while not self.stop.is_set() and time.monotonic() - started < self.max_s:
            key = (n + i * self.loops) % self.keys
            port = self.ports[i % len(self.ports)]
            i += 1
            at = time.monotonic()
            try:
                async with s.get(url(port, f"/home?id={key}", self.host)) as resp:
                    body = json.loads(await resp.read())
                server = served_by(body)
                if resp.status == 200 and server is not None:
                    self.ok += 1
                    self.counts[server] += 1
                    self.served[key] = server
                else:
                    self.failures.append((at, key, f":{port} {resp.status} {body}"))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.failures.append((at, key, f":{port} {exc!r}"))

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)


@contextlib.asynccontextmanager
async def session() -> Any:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=50), timeout=aiohttp.ClientTimeout(total=10)
    ) as s:
        yield s

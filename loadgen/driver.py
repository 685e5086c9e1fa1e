"""The load driver behind ``lb-loadgen run``: send GETs at a balancer and record each one.

Owns the request loop: one ``aiohttp.ClientSession`` whose connector allows ``concurrency``
connections; ``rate`` > 0 is open loop (request i is due at ``i / rate`` s whatever the answers
do, at most ``concurrency`` in flight, so a late send is counted as lag), ``rate`` 0 runs
``concurrency`` workers back to back as fast as the balancer answers. Every run is bounded: by
a request count, a duration, or both (whichever ends first), and each request by a timeout.
Must not import anything from ``balancer`` or ``server``: it speaks only HTTP.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from loadgen.contract import replica_from_body
from loadgen.keys import KeyDrawer, KeySpec
from loadgen.records import RequestRecord


@dataclass(frozen=True)
class DriveConfig:
    target: str  # the full URL, e.g. http://127.0.0.1:5555/home
    count: int | None = 10_000
    duration_s: float | None = None
    rate: float = 0.0  # requests per second; 0 = as fast as possible
    concurrency: int = 100
    keys: KeySpec = field(default_factory=KeySpec)
    seed: int | None = None
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.count is None and self.duration_s is None:
            raise ValueError("a run needs a request count or a duration (or both)")
        if self.count is not None and self.count < 1:
            raise ValueError("the request count must be at least 1")
        if self.duration_s is not None and not 0 < self.duration_s <= 86_400:
            raise ValueError("the duration must be in (0, 86400] seconds")
        if self.rate < 0 or self.concurrency < 1 or self.timeout_s <= 0:
            raise ValueError("rate must be >= 0, concurrency >= 1, timeout > 0")

    @property
    def expected(self) -> int | None:
        """How many requests the run will send, when known in advance (for the progress bar)."""
        by_time = math.ceil(self.rate * self.duration_s) if self.rate and self.duration_s else None
        if self.count is None:
            return by_time
        return min(self.count, by_time) if by_time is not None else self.count


@dataclass
class DriveResult:
    records: list[RequestRecord]
    seconds: float
    max_lag_s: float = 0.0


async def one_request(
    session: aiohttp.ClientSession, target: str, key: str | None, t0: float
) -> RequestRecord:
    """Send one GET (with ``?id=key`` when there is a key) and record what came back."""
    started = time.monotonic()
    status: int | None = None
    replica: str | None = None
    error: str | None = None
    try:
        async with session.get(target, params={"id": key} if key is not None else None) as resp:
            status = resp.status
            raw = await resp.read()
        if 200 <= status < 300:
            replica = replica_from_body(raw)
        else:
            error = f"HTTP {status}"
    except TimeoutError:
        error = "TimeoutError"
    except aiohttp.ClientError as exc:
        error = type(exc).__name__
    return RequestRecord(
        t_start=started - t0,
        latency_s=time.monotonic() - started,
        status=status,
        replica=replica,
        key=key,
        error=error,
    )


async def drive(config: DriveConfig, on_done: Callable[[], None] | None = None) -> DriveResult:
    """Run ``config``; ``on_done`` is called after each request (the progress bar)."""
    keys = KeyDrawer(config.keys, config.seed)
    connector = aiohttp.TCPConnector(limit=config.concurrency)
    timeout = aiohttp.ClientTimeout(total=config.timeout_s)
    records: list[RequestRecord] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.monotonic()
        deadline = t0 + config.duration_s if config.duration_s is not None else math.inf
        limit = config.count if config.count is not None else math.inf

        async def send(key: str | None) -> None:
            records.append(await one_request(session, config.target, key, t0))
            if on_done is not None:
                on_done()

        if config.rate > 0:
            lag = await _open_loop(config, send, keys, t0, deadline, limit)
        else:
            lag = 0.0
            sent = 0

            async def worker() -> None:
                nonlocal sent
                while sent < limit and time.monotonic() < deadline:
                    sent += 1
                    await send(keys.next())

            await asyncio.gather(*(worker() for _ in range(config.concurrency)))
        seconds = time.monotonic() - t0
    return DriveResult(records, seconds, lag)


async def _open_loop(
    config: DriveConfig,
    send: Callable[[str | None], Awaitable[None]],
    keys: KeyDrawer,
    t0: float,
    deadline: float,
    limit: float,
) -> float:
    """Start request i at ``t0 + i / rate``; return the largest lag behind that schedule."""
    slots = asyncio.Semaphore(config.concurrency)
    tasks: set[asyncio.Task[None]] = set()
    lag = 0.0
    i = 0

    async def run(key: str | None) -> None:
        try:
            await send(key)
        finally:
            slots.release()

    while i < limit:
        due = t0 + i / config.rate
        if due >= deadline:
            break
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        lag = max(lag, time.monotonic() - due)
        task = asyncio.create_task(run(keys.next()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.gather(*tasks)
    return lag

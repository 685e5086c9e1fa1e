"""What the live Prometheus test does to the cluster, step by step, and what it measured.

Owns ``Live`` (the cluster, the Prometheus process, the timing and each step's results, so each
step runs once per module whichever test asks first), ``drive`` (an exact, bounded number of
``GET /home`` per instance, with the replica that answered each), ``malformed`` (requests the
balancer itself answers 400) and ``Timeline`` (seconds from a fault to each thing seen).
Traffic goes to 127.0.0.1 only; processes are signalled only by pids the cluster reports as its
own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.observability.harness import Intervals, PromApi, PrometheusProcess
from tests.support.cluster import (
    SERVER_PREFIX,
    Cluster,
    Instance,
    Json,
    call,
    status_of,
)

REQUEST_TIMEOUT_S = 10.0
# The balancers' health checks (tests.support.cluster.FAST_ARGS: a 0.2 s interval, fall 2,
# 0.2 s timeout, 10 % jitter) hold a hung replica DOWN within this.
DETECT_S = 1.0
SLACK_S = 2.0  # polling, process scheduling on a loaded 2-core machine


@dataclass(frozen=True)
class AlertBounds:
    """When a replica-down alert must be pending, firing and resolved, from Prometheus'
    intervals and the rule's ``for:``; and the balancers' replace_after_s that lets it fire
    before the hung replica is replaced. Seconds from the fault, except ``resolved_s``
    (seconds from the replacement)."""

    for_s: float
    pending_s: float  # detection, a balancer scrape or a replica scrape timing out, a rule run
    firing_s: float  # pending, then ``for:``, then the rule run that sees it
    grace_s: float  # replace_after_s: after the latest firing
    resolved_s: float  # the series gone (a scrape, or a discovery refresh), then a rule run

    @classmethod
    def of(cls, timing: Intervals, for_s: float) -> AlertBounds:
        pending = DETECT_S + timing.scrape_s + timing.scrape_timeout_s + timing.evaluation_s
        pending += SLACK_S
        firing = pending + for_s + timing.evaluation_s + SLACK_S
        gone = max(timing.scrape_s, timing.sd_refresh_s) + timing.scrape_timeout_s
        return cls(
            for_s=for_s,
            pending_s=pending,
            firing_s=firing,
            grace_s=math.ceil(firing + timing.evaluation_s + SLACK_S),
            resolved_s=gone + timing.evaluation_s + SLACK_S,
        )


@dataclass
class Sent:
    """What ``drive`` sent and what answered."""

    per_instance: Counter[str] = field(default_factory=Counter)  # instance name → 200s
    per_replica: Counter[str] = field(default_factory=Counter)  # server id → 200s
    failures: list[str] = field(default_factory=list)
    started_at: float = 0.0  # wall clock, as Prometheus timestamps are
    ended_at: float = 0.0


async def drive(
    s: aiohttp.ClientSession,
    plan: Mapping[Instance, int],
    *,
    concurrency: int = 8,
    first_id: int = 0,
    timeout_s: float = 30.0,
) -> Sent:
    """Exactly ``plan[i]`` ``GET /home?id=<k>`` to each instance ``i`` (distinct ids from
    ``first_id``), ``concurrency`` at a time per instance, stopping at ``timeout_s``."""
    sent = Sent(started_at=time.time())
    deadline = time.monotonic() + timeout_s
    next_id = iter(range(first_id, first_id + sum(plan.values())))

    async def client(instance: Instance, queue: list[int]) -> None:
        while queue and time.monotonic() < deadline:
            key = queue.pop()
            try:
                code, body = await call(s, "GET", f"{instance.url}/home?id={key}")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                sent.failures.append(f"{instance.name} id={key}: {exc!r}")
                continue
            message = body.get("message")
            if code != 200 or not isinstance(message, str) or not message.startswith(SERVER_PREFIX):
                sent.failures.append(f"{instance.name} id={key}: {code} {body}")
                continue
            sent.per_instance[instance.name] += 1
            sent.per_replica[message[len(SERVER_PREFIX) :]] += 1

    tasks = []
    for instance, count in plan.items():
        queue = [next(next_id) for _ in range(count)]
        tasks += [client(instance, queue) for _ in range(concurrency)]
    await asyncio.gather(*tasks)
    sent.ended_at = time.time()
    return sent


async def malformed(instance: Instance, count: int) -> list[bytes]:
    """``count`` requests with an unparsable Content-Length: the balancer answers each itself
    (400) and sends nothing upstream. The status line of each answer."""
    lines = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", instance.port)
        try:
            writer.write(b"GET /home?id=1 HTTP/1.1\r\nHost: lb\r\nContent-Length: nope\r\n\r\n")
            await writer.drain()
            lines.append(await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return lines


async def leader_status(s: aiohttp.ClientSession, cluster: Cluster) -> Json:
    for instance in cluster.instances:
        status = await status_of(s, instance)
        if status["leader"]:
            return status
    raise AssertionError("no instance is the leader")


class Timeline:
    """Seconds from ``start`` (a monotonic time) to the first time each event was seen."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.start_wall = time.time() - (time.monotonic() - start)
        self.events: dict[str, float] = {}

    def wall(self, event: str) -> float:
        """When ``event`` was seen, as a Unix time (Prometheus' clock, on this machine)."""
        return self.start_wall + self.events[event]

    def see(self, event: str, at: float | None = None) -> None:
        if event not in self.events:
            self.events[event] = (time.monotonic() if at is None else at) - self.start

    def __getitem__(self, event: str) -> float:
        return self.events[event]

    def __contains__(self, event: str) -> bool:
        return event in self.events

    def lines(self) -> list[str]:
        return [f"+{t:6.1f} s  {e}" for e, t in sorted(self.events.items(), key=lambda x: x[1])]


@dataclass
class Live:
    """One cluster and one Prometheus for the module, and the results of each step."""

    cluster: Cluster
    prometheus: PrometheusProcess
    timing: Intervals
    bounds: AlertBounds  # bounds.grace_s is the balancers' replace_after_s
    addresses: dict[str, Instance]  # Prometheus' `instance` label of a balancer → the instance
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)

    def api(self, s: aiohttp.ClientSession) -> PromApi:
        return PromApi(s, self.prometheus.url)

    async def once(self, step: str, run: Callable[[], Awaitable[Any]]) -> Any:
        """``run()``'s result, computed the first time ``step`` is asked for; a step that
        failed fails every later test that needs it, with its error."""
        if step in self.errors:
            raise AssertionError(f"step {step!r} failed earlier") from self.errors[step]
        if step not in self.results:
            try:
                self.results[step] = await run()
            except BaseException as exc:
                self.errors[step] = exc
                raise
        return self.results[step]

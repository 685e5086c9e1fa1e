"""The alert step of the live Prometheus test: a replica hangs (SIGSTOP), and the test watches
the balancers, the ring and Prometheus' ``/api/v1/alerts`` until ``ChlbReplicaDown`` has gone
pending, fired, and resolved after the balancers replaced the replica. Every other alert seen
meanwhile goes on the same timeline.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections import Counter
from datetime import datetime

import aiohttp

from tests.observability.scenario import AlertBounds, Live, Timeline, leader_status
from tests.observability.steps import ALERT, faults_step
from tests.support.cluster import Load, replica_processes

POLL_S = 0.5
LOAD_S = 4.0
Checks = list[tuple[str, bool]]


def _wall(stamp: str) -> float:
    """An RFC 3339 time from Prometheus (nanoseconds, ``Z``) as a Unix time."""
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


class Watch:
    """One hung replica, watched (see the module docstring)."""

    def __init__(self, live: Live, victim: str) -> None:
        self.live = live
        self.victim = victim
        self.start = time.monotonic()
        self.timeline = Timeline(self.start)
        self.active: set[str] = set()
        self.replacement = ""

    async def poll(self, s: aiohttp.ClientSession) -> None:
        try:
            status = await leader_status(s, self.live.cluster)
        except (aiohttp.ClientError, TimeoutError, AssertionError):
            status = None
        if status is not None:
            names = {r["name"]: r for r in status["replicas"]}
            if self.victim not in names:
                self.timeline.see("the balancers replaced it (left the ring)")
                self.replacement = self.replacement or ", ".join(sorted(names))
            elif not names[self.victim]["alive"]:
                self.timeline.see("the balancers hold it DOWN")
        await self._alerts(s)

    async def _alerts(self, s: aiohttp.ClientSession) -> None:
        now: set[str] = set()
        for alert in await self.live.api(s).alerts():
            labels = alert["labels"]
            name = labels["alertname"]
            if name == ALERT and labels.get("replica", self.victim) != self.victim:
                continue  # another replica's (the one SIGKILLed before)
            now.add(name)
            self.timeline.see(f"{name} {alert['state']}")
            if name == ALERT:
                at = self.start + _wall(alert["activeAt"]) - self.timeline.start_wall
                self.timeline.see(f"{ALERT} activeAt (Prometheus' own time)", at)
        for name in self.active - now:
            self.timeline.see(f"{name} resolved")
        self.active = now


async def _quiet(live: Live, s: aiohttp.ClientSession, timeout_s: float) -> list[str]:
    """Wait until no ``ALERT`` is active (the SIGKILL's has resolved); the alerts active then."""
    deadline = time.monotonic() + timeout_s
    while True:
        active = [a["labels"]["alertname"] for a in await live.api(s).alerts()]
        if ALERT not in active or time.monotonic() > deadline:
            return active
        await asyncio.sleep(POLL_S)


def checks(timeline: Timeline, bounds: AlertBounds) -> Checks:
    """Whether the timeline keeps the bounds (each with the measured figures)."""
    t = timeline.events
    pending = t.get(f"{ALERT} pending", t.get(f"{ALERT} firing", float("inf")))
    firing = t.get(f"{ALERT} firing", float("inf"))
    active = t.get(f"{ALERT} activeAt (Prometheus' own time)", float("inf"))
    replaced = t.get("the balancers replaced it (left the ring)", float("inf"))
    resolved = t.get(f"{ALERT} resolved", float("inf"))
    return [
        (f"pending at {pending:.1f}s <= {bounds.pending_s:.1f}s", pending <= bounds.pending_s),
        (
            f"firing at {firing:.1f}s >= activeAt {active:.1f}s + for {bounds.for_s:g}s",
            firing >= active + bounds.for_s - 0.1,
        ),
        (f"firing at {firing:.1f}s <= {bounds.firing_s:.1f}s", firing <= bounds.firing_s),
        (f"firing {firing:.1f}s before the replacement {replaced:.1f}s", firing < replaced),
        (
            f"replaced at {replaced:.1f}s, after replace_after_s {bounds.grace_s:g}s",
            bounds.grace_s - 0.5 <= replaced <= bounds.grace_s + 10,
        ),
        (
            f"resolved at {resolved:.1f}s, within {bounds.resolved_s:.1f}s after the replacement",
            replaced < resolved <= replaced + bounds.resolved_s,
        ),
    ]


async def alert_step(live: Live, s: aiohttp.ClientSession) -> tuple[Timeline, Checks, list[str]]:
    async def run() -> tuple[Timeline, Checks, list[str]]:
        await faults_step(live, s)
        bounds = live.bounds
        left = await _quiet(live, s, bounds.resolved_s)
        victim = (await leader_status(s, live.cluster))["replicas"][0]
        assert victim["pid"] in replica_processes(live.cluster.tag)  # ours: safe to signal
        # Traffic across the hang: the requests in flight on the replica when it stops get a
        # 504 after upstream_timeout_s (errors, 5xx and ejection panels get data to show).
        load = Load(live.cluster.instances, clients=8, max_requests=5_000)
        traffic = asyncio.create_task(load.run(s, duration_s=LOAD_S))
        try:
            await asyncio.sleep(1.0)
            watch = Watch(live, victim["name"])
            os.kill(victim["pid"], signal.SIGSTOP)
            watch.timeline.see(f"SIGSTOP {victim['name']} (pid {victim['pid']}): hung, not gone")
            deadline = watch.start + bounds.grace_s + bounds.resolved_s + 15
            while time.monotonic() < deadline and f"{ALERT} resolved" not in watch.timeline:
                await watch.poll(s)
                await asyncio.sleep(POLL_S)
        finally:
            load.stop.set()
            await traffic
        failed = Counter(f.split(": ", 1)[1].split(" ", 1)[0][:24] for f in load.failures)
        notes = [
            f"load across the hang ({LOAD_S:g}s): {load.sent} requests, failed: {dict(failed)}",
            f"ring after the replacement: {watch.replacement}",
        ]
        if left:
            notes.append(f"alerts active when the replica was stopped: {left}")
        return watch.timeline, checks(watch.timeline, bounds), notes

    return await live.once("alert", run)  # type: ignore[no-any-return]

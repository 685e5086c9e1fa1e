"""Analysis A-1: 10,000 async ``GET /home`` at N = 3, requests per replica, bar chart.

Owns ``measure`` (one batch at the current membership, counted per ``/rep`` name, replicas that
got nothing included as 0) and the A-1 command: scale to N = 3 first if needed (``/add`` /
``/rm``), measure, put the original membership back, write ``a1.png``, ``a1.json``, ``a1.csv``.
The batch is the reference client: one ``ClientSession``, all requests in one
``asyncio.gather``, connector limit 100 (``loadgen.spread``). A-2 and A-4 reuse ``measure``.
Must not import anything from ``balancer`` or ``server``: it speaks only HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadgen import output, plots
from loadgen.admin import Admin
from loadgen.contract import name_for_id, natural_key
from loadgen.spread import measure_spread
from loadgen.stats import LoadStats

REFERENCE_CONNECTIONS = 100  # aiohttp's default connector limit, as the reference clients use
REQUEST_TIMEOUT_S = 60.0


@dataclass
class LoadRun:
    """One batch of requests at one membership."""

    requests: int
    seconds: float
    names: list[str]  # the /rep names during the run (natural order)
    per_replica: dict[str, int]  # by /rep name; 0 for a replica that got none
    failures: dict[str, int] = field(default_factory=dict)
    membership_changed: bool = False  # /rep differed after the batch

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def ok(self) -> int:
        return sum(self.per_replica.values())

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def load(self) -> LoadStats:
        return LoadStats.of([self.per_replica.get(name, 0) for name in self.names])

    def to_json(self) -> dict[str, Any]:
        load = self.load
        return {
            "N": self.n,
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.failed,
            "failures": self.failures,
            "seconds": round(self.seconds, 3),
            "req_per_s": round(self.requests / self.seconds, 1) if self.seconds else None,
            "per_replica": self.per_replica,
            "ideal": self.requests / self.n if self.n else None,
            "mean": load.mean,
            "min": load.min,
            "max": load.max,
            "stdev": round(load.stdev, 3),
            "peak_to_mean": round(load.peak_to_mean, 4),
            "membership_changed": self.membership_changed,
        }


async def measure(admin: Admin, requests: int) -> LoadRun:
    """``requests`` concurrent ``GET /home`` at the current membership, counted per replica."""
    names = sorted(await admin.replicas(), key=natural_key)
    spread = await measure_spread(
        admin.base + "/home",
        requests,
        connections=REFERENCE_CONNECTIONS,
        timeout_s=REQUEST_TIMEOUT_S,
    )
    per_replica = dict.fromkeys(names, 0)
    for rid, count in spread.per_replica.items():
        name = name_for_id(rid, names)
        per_replica[name] = per_replica.get(name, 0) + count
    after = sorted(await admin.replicas(), key=natural_key)
    return LoadRun(
        requests=requests,
        seconds=spread.seconds,
        names=names,
        per_replica=per_replica,
        failures=dict(spread.failures),
        membership_changed=after != names,
    )


@dataclass
class A1Result:
    url: str
    original: list[str]
    run: LoadRun
    restored: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "analysis": "A-1",
            "url": self.url,
            "original_N": len(self.original),
            "restored_N": len(self.restored),
            **self.run.to_json(),
        }


async def run_a1(url: str, requests: int = 10_000, n: int = 3) -> A1Result:
    """A-1 against the balancer at ``url``; the original membership is put back after."""
    async with aiohttp.ClientSession() as session:
        admin = Admin(session, url)
        original = await admin.replicas()
        restored = original
        try:
            await admin.scale_to(n)
            run = await measure(admin, requests)
        finally:
            if len(await admin.replicas()) != len(original):
                restored = await admin.restore(original)
    return A1Result(admin.base, original, run, restored)


def write_a1(result: A1Result, out: Path) -> list[Path]:
    run = result.run
    rows = [[name, c, round(c / max(run.ok, 1), 4)] for name, c in run.per_replica.items()]
    return [
        plots.bars_per_replica(
            out / "a1.png",
            list(run.per_replica),
            list(run.per_replica.values()),
            run.load.mean,
            f"A-1: {run.requests:,} requests at N={run.n} ({run.failed} failed)",
        ),
        output.write_json(out / "a1.json", result.to_json()),
        output.write_rows(out / "a1.csv", ["replica", "requests", "share"], rows),
    ]


def table_a1(run: LoadRun) -> str:
    rows: list[list[Any]] = [
        [
            name,
            run.per_replica.get(name, 0),
            f"{100 * run.per_replica.get(name, 0) / max(run.ok, 1):.1f}%",
        ]
        for name in run.names
    ]
    load = run.load
    text = output.table(["replica", "requests", "share"], rows)
    return (
        f"{text}\nN={run.n}  requests {run.requests}  ok {run.ok}  failed {run.failed} "
        f"{run.failures or ''}  in {run.seconds:.2f} s\n"
        f"mean {load.mean:.1f}  min {load.min}  max {load.max}  stdev {load.stdev:.1f}  "
        f"peak/mean {load.peak_to_mean:.3f}"
    )

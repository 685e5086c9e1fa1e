"""Analysis A-2: N = 2..6, 10,000 requests at each N, mean and spread of load per replica.

Owns the A-2 sweep (scale with ``POST /add {"n": d, "hostnames": []}`` / ``DELETE /rm {"n":
d}`` as the reference scale drivers do, then one A-1 batch per N), putting the original
membership back afterwards, and its outputs: ``a2.png`` (mean per replica with min..max whiskers
and a ±stdev band against the ideal ``requests / N``), ``a2.json``, ``a2.csv``. A-4 reuses
``sweep``. Must not import anything from ``balancer`` or ``server``: it speaks only HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from loadgen import output, plots
from loadgen.a1 import LoadRun, measure
from loadgen.admin import Admin

SIZES = (2, 3, 4, 5, 6)
CSV_HEADER = [
    "N",
    "requests",
    "ok",
    "failed",
    "ideal",
    "mean",
    "min",
    "max",
    "stdev",
    "peak_to_mean",
]


async def sweep(admin: Admin, requests: int, sizes: Sequence[int] = SIZES) -> list[LoadRun]:
    """One batch per N in ``sizes``; leaves the balancer at the last N."""
    runs = []
    for n in sizes:
        await admin.scale_to(n)
        runs.append(await measure(admin, requests))
    return runs


@dataclass
class A2Result:
    url: str
    original: list[str]
    runs: list[LoadRun]
    restored: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "analysis": "A-2",
            "url": self.url,
            "original_N": len(self.original),
            "restored_N": len(self.restored),
            "runs": [run.to_json() for run in self.runs],
        }


async def run_a2(url: str, requests: int = 10_000, sizes: Sequence[int] = SIZES) -> A2Result:
    """A-2 against the balancer at ``url``; the original membership is put back after."""
    async with aiohttp.ClientSession() as session:
        admin = Admin(session, url)
        original = await admin.replicas()
        try:
            runs = await sweep(admin, requests, sizes)
        finally:
            restored = await admin.restore(original)
    return A2Result(admin.base, original, runs, restored)


def csv_row(run: LoadRun) -> list[Any]:
    load = run.load
    return [
        run.n,
        run.requests,
        run.ok,
        run.failed,
        round(run.requests / run.n, 3),
        round(load.mean, 3),
        load.min,
        load.max,
        round(load.stdev, 3),
        round(load.peak_to_mean, 4),
    ]


def series(label: str, runs: Sequence[LoadRun]) -> plots.LoadSeries:
    loads = [run.load for run in runs]
    return plots.LoadSeries(
        label=label,
        ns=[run.n for run in runs],
        means=[x.mean for x in loads],
        stdevs=[x.stdev for x in loads],
        mins=[x.min for x in loads],
        maxs=[x.max for x in loads],
    )


def write_a2(result: A2Result, out: Path) -> list[Path]:
    requests = result.runs[0].requests if result.runs else 0
    failed = sum(run.failed for run in result.runs)
    return [
        plots.load_vs_n(
            out / "a2.png",
            [series("load per replica", result.runs)],
            requests,
            f"A-2: {requests:,} requests at each N ({failed} failed)",
        ),
        output.write_json(out / "a2.json", result.to_json()),
        output.write_rows(out / "a2.csv", CSV_HEADER, [csv_row(run) for run in result.runs]),
    ]


def table_a2(runs: Sequence[LoadRun]) -> str:
    return output.table(CSV_HEADER, [csv_row(run) for run in runs])

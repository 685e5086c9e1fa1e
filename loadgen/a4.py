"""Analysis A-4: A-1 and A-2 under the assignment's literal hash scheme and under the default
algorithm, compared.

Owns the comparison: read the algorithm in force (``GET /lb/settings``), switch to
``assignment`` (``PUT /lb/settings {"algorithm": "assignment"}``), run A-1 and A-2, switch to
the comparison algorithm (the original one; ``slots`` if the original was ``assignment``), run
them again, and always put the original algorithm and membership back (try/finally). Writes
``a4_a1.png`` (grouped bars per replica), ``a4_a2.png`` (both A-2 lines and the ideal),
``a4.json`` and ``a4.csv``. Must not import anything from ``balancer`` or ``server``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from loadgen import a2, output, plots
from loadgen.a1 import LoadRun, measure
from loadgen.admin import Admin
from loadgen.contract import natural_key

ASSIGNMENT = "assignment"
FALLBACK = "slots"  # compared against when the balancer already runs the assignment scheme


@dataclass
class AlgorithmRuns:
    algorithm: str
    a1: LoadRun
    a2: list[LoadRun]


@dataclass
class A4Result:
    url: str
    original_algorithm: str
    restored_algorithm: str
    original: list[str]
    restored: list[str]
    results: list[AlgorithmRuns]

    def to_json(self) -> dict[str, Any]:
        return {
            "analysis": "A-4",
            "url": self.url,
            "original_algorithm": self.original_algorithm,
            "restored_algorithm": self.restored_algorithm,
            "original_N": len(self.original),
            "restored_N": len(self.restored),
            "algorithms": {
                r.algorithm: {"a1": r.a1.to_json(), "a2": [run.to_json() for run in r.a2]}
                for r in self.results
            },
        }


async def run_a4(
    url: str,
    requests: int = 10_000,
    compare: str | None = None,
    sizes: Sequence[int] = a2.SIZES,
) -> A4Result:
    async with aiohttp.ClientSession() as session:
        admin = Admin(session, url)
        original_algorithm = str((await admin.settings())["algorithm"])
        other = compare or (original_algorithm if original_algorithm != ASSIGNMENT else FALLBACK)
        original = await admin.replicas()
        results: list[AlgorithmRuns] = []
        try:
            for algorithm in (ASSIGNMENT, other):
                await admin.set_algorithm(algorithm)
                await admin.scale_to(3)
                a1_run = await measure(admin, requests)
                a2_runs = await a2.sweep(admin, requests, sizes)
                await admin.restore(original)  # the next A-1 runs on the same replicas
                results.append(AlgorithmRuns(algorithm, a1_run, a2_runs))
        finally:
            if (await admin.settings())["algorithm"] != original_algorithm:
                await admin.set_algorithm(original_algorithm)
            restored = await admin.restore(original)
            restored_algorithm = str((await admin.settings())["algorithm"])
    return A4Result(admin.base, original_algorithm, restored_algorithm, original, restored, results)


def _a1_groups(result: A4Result) -> tuple[list[str], list[tuple[str, list[int]]]]:
    names = sorted({n for r in result.results for n in r.a1.per_replica}, key=natural_key)
    groups = [(r.algorithm, [r.a1.per_replica.get(n, 0) for n in names]) for r in result.results]
    return names, groups


def write_a4(result: A4Result, out: Path) -> list[Path]:
    names, groups = _a1_groups(result)
    requests = result.results[0].a1.requests if result.results else 0
    rows = [["a1", r.algorithm, *a2.csv_row(r.a1)] for r in result.results] + [
        ["a2", r.algorithm, *a2.csv_row(run)] for r in result.results for run in r.a2
    ]
    return [
        plots.grouped_bars(
            out / "a4_a1.png",
            names,
            groups,
            f"A-4 / A-1: {requests:,} requests at N=3, by algorithm",
        ),
        plots.load_vs_n(
            out / "a4_a2.png",
            [a2.series(r.algorithm, r.a2) for r in result.results],
            requests,
            f"A-4 / A-2: {requests:,} requests at each N, by algorithm",
        ),
        output.write_json(out / "a4.json", result.to_json()),
        output.write_rows(out / "a4.csv", ["experiment", "algorithm", *a2.CSV_HEADER], rows),
    ]


def table_a4(result: A4Result) -> str:
    names, groups = _a1_groups(result)
    a1_rows = [[name, *(counts[i] for _, counts in groups)] for i, name in enumerate(names)]
    a1_rows.append(["peak/mean", *(f"{r.a1.load.peak_to_mean:.3f}" for r in result.results)])
    header = ["N", "algorithm", "mean", "min", "max", "stdev", "peak/mean", "failed"]
    a2_rows: list[list[Any]] = [
        [
            run.n,
            r.algorithm,
            run.load.mean,
            run.load.min,
            run.load.max,
            run.load.stdev,
            f"{run.load.peak_to_mean:.3f}",
            run.failed,
        ]
        for r in result.results
        for run in r.a2
    ]
    a2_rows.sort(key=lambda row: row[0])
    return (
        "A-1 (N=3), requests per replica:\n"
        + output.table(["replica", *(g for g, _ in groups)], a1_rows)
        + "\n\nA-2, load per replica:\n"
        + output.table(header, a2_rows)
        + f"\n\nalgorithm restored: {result.restored_algorithm} "
        f"(was {result.original_algorithm}); N restored: {len(result.restored)} "
        f"(was {len(result.original)})"
    )

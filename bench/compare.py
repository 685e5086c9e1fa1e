"""Print one table from an lb_bench.sh result folder: every system against HAProxy.

Usage: python bench/compare.py RESULT_DIR [BASELINE]   (BASELINE defaults to haproxy-uri)
Medians over the measured runs; ratios divide medians from the same run.
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path


def median(rows: list[dict[str, str]], field: str) -> float | None:
    values = [float(r[field]) for r in rows if r.get(field) not in (None, "", "-")]
    return statistics.median(values) if values else None


def summarize(rows: list[dict[str, str]]) -> dict[str, float | None]:
    requests = sum(float(r["requests"]) for r in rows)
    cpu = [float(r["lb_cpu_s"]) for r in rows if r["lb_cpu_s"] not in ("", "-")]
    errors = sum(
        int(r[k])
        for r in rows
        for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout")
    )
    return {
        "rps": median(rows, "rps"),
        "p50_ms": (median(rows, "p50_us") or 0) / 1000,
        "p99_ms": (median(rows, "p99_us") or 0) / 1000,
        "cpu_us": sum(cpu) / requests * 1e6 if cpu and requests else None,
        "errors": errors,
        "runs": len(rows),
    }


def main() -> None:
    folder = Path(sys.argv[1])
    baseline = sys.argv[2] if len(sys.argv) > 2 else "haproxy-uri"
    with open(folder / "raw.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    systems: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        systems.setdefault(row["system"], []).append(row)
    stats = {name: summarize(rs) for name, rs in systems.items()}
    base = stats.get(baseline)
    mode = rows[0]["mode"] if rows else "?"
    print(
        f"mode {mode}, {len(next(iter(systems.values())))} runs per system; "
        f"ratios against {baseline} from the same run\n"
    )
    print(
        "| system | req/s (median) | ratio | p50 ms | p99 ms | p99 ratio "
        "| balancer CPU µs/req | CPU ratio | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, st in stats.items():

        def ratio(key: str, st: dict[str, float | None] = st) -> str:
            mine, theirs = st[key], base[key] if base else None
            return f"{mine / theirs:.2f}" if mine and theirs else "-"

        cpu = f"{st['cpu_us']:.1f}" if st["cpu_us"] else "-"
        print(
            f"| {name} | {st['rps']:,.0f} | {ratio('rps')} | {st['p50_ms']:.2f} | "
            f"{st['p99_ms']:.2f} | {ratio('p99_ms')} | {cpu} | {ratio('cpu_us')} | "
            f"{st['errors']} |"
        )


if __name__ == "__main__":
    main()

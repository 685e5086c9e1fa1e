"""One row per request: what the driver records and how ``--csv`` writes it.

Owns ``RequestRecord`` and the CSV format (columns ``t_start, latency_s, status, replica, key,
error``; ``t_start`` in seconds since the run began; empty cells for absent values). Pure apart
from writing the file it is given.
Must not import anything from ``balancer`` or ``server``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CSV_FIELDS = ("t_start", "latency_s", "status", "replica", "key", "error")


@dataclass(frozen=True)
class RequestRecord:
    t_start: float  # seconds since the run began, when the request was sent
    latency_s: float  # send → answer read (or → the error)
    status: int | None  # HTTP status, None when no answer arrived
    replica: str | None  # the replica id from ``message`` (``message.split()[-1]``)
    key: str | None  # the ``?id=`` sent, None for none
    error: str | None  # None for a 2xx answer; else ``HTTP 502``, ``TimeoutError``, …

    @property
    def ok(self) -> bool:
        return self.error is None


def csv_row(record: RequestRecord) -> list[str]:
    return [
        f"{record.t_start:.6f}",
        f"{record.latency_s:.6f}",
        "" if record.status is None else str(record.status),
        record.replica or "",
        record.key or "",
        record.error or "",
    ]


def write_csv(path: Path, records: Iterable[RequestRecord]) -> int:
    """Write a header and one row per record; return the number of rows."""
    rows = 0
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for record in records:
            writer.writerow(csv_row(record))
            rows += 1
    return rows

"""Where an analysis's numbers go: JSON and CSV files in ``--out`` and a printed table.

Owns the file formats of the analysis outputs (JSON indented, CSV with a header row) and the
plain-text table layout. Must not import anything from ``balancer`` or ``server``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def write_rows(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _cell(value: Any, decimals: int) -> str:
    return f"{value:.{decimals}f}" if isinstance(value, float) else str(value)


def _decimals(column: Sequence[Any]) -> int:
    """Floats in a column share their decimals: 1 when any is 10 or more, else 3."""
    floats = [abs(v) for v in column if isinstance(v, float)]
    return 1 if floats and max(floats) >= 10 else 3


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown-style table (it pastes into a README as it is)."""
    """Numbers are right-aligned, text left-aligned."""
    decimals = [_decimals([row[i] for row in rows]) for i in range(len(header))]
    cells = [[_cell(v, d) for v, d in zip(row, decimals, strict=True)] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    numeric = [
        all(isinstance(row[i], int | float) or _is_number(str(row[i])) for row in rows)
        for i in range(len(header))
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if num else "-" * (w + 2)
            for w, num in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(list(header)), rule, *(line(r) for r in cells)])


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%"))
    except ValueError:
        return False
    return True

"""The driver's progress bar (tqdm): on only when stdout is a terminal and not ``--quiet``.

Owns that decision and the bar's life (``update``, ``close``); everything else calls a
``Progress`` that may be a no-op. Must not import anything from ``balancer`` or ``server``.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]


def wanted(quiet: bool) -> bool:
    return not quiet and sys.stdout.isatty()


class Progress:
    """A request counter with a bar when enabled; ``total`` None means unknown (time-bound)."""

    def __init__(self, total: int | None, *, enabled: bool, desc: str = "requests") -> None:
        self._bar: Any = (
            tqdm(total=total, unit="req", desc=desc, file=sys.stdout, dynamic_ncols=True)
            if enabled
            else None
        )

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

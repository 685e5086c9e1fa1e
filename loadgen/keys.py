"""Key distributions for the driver: which ``?id=`` each request carries.

Owns parsing ``--keys`` (``none``, ``uniform:<K>``, ``zipf:<K>:<s>``) and drawing keys from it.
Keys are 6-digit ids (the assignment's request ids), K distinct ones per run, drawn from a
seeded ``random.Random`` so a run is reproducible. Pure: no I/O.
Must not import anything from ``balancer`` or ``server``.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

KINDS = ("none", "uniform", "zipf")
ID_LOW, ID_HIGH = 100_000, 1_000_000  # 6-digit ids: at most 900,000 distinct keys

KEYS_HELP = (
    "key distribution: 'none' (no key; the balancer picks a random id), 'uniform:<K>' "
    "(K distinct ids, each equally likely, sent as ?id=), 'zipf:<K>:<s>' (K ids, the r-th "
    "most popular with probability ∝ 1/r^s)"
)


@dataclass(frozen=True)
class KeySpec:
    kind: str = "none"
    k: int = 0
    s: float = 0.0

    def __str__(self) -> str:
        if self.kind == "none":
            return "none"
        return f"uniform:{self.k}" if self.kind == "uniform" else f"zipf:{self.k}:{self.s:g}"


def parse_keys(spec: str) -> KeySpec:
    """``none`` | ``uniform:<K>`` | ``zipf:<K>:<s>``; ValueError with the reason otherwise."""
    kind, *rest = spec.strip().lower().split(":")
    if kind not in KINDS:
        raise ValueError(f"unknown key distribution {kind!r} (one of {', '.join(KINDS)})")
    expected = {"none": 0, "uniform": 1, "zipf": 2}[kind]
    if len(rest) != expected:
        raise ValueError(f"{spec!r}: expected none, uniform:<K> or zipf:<K>:<s>")
    if kind == "none":
        return KeySpec()
    try:
        k = int(rest[0])
        s = float(rest[1]) if kind == "zipf" else 0.0
    except ValueError:
        raise ValueError(f"{spec!r}: K must be an integer and s a number") from None
    if not 1 <= k <= ID_HIGH - ID_LOW:
        raise ValueError(f"{spec!r}: K must be in 1..{ID_HIGH - ID_LOW}")
    if not 0.0 <= s <= 10.0:
        raise ValueError(f"{spec!r}: s must be in 0..10")
    return KeySpec(kind, k, s)


class KeyDrawer:
    """Draws keys for one run: ``next()`` is a key string, or None for ``none``."""

    def __init__(self, spec: KeySpec, seed: int | None = None) -> None:
        self.spec = spec
        self._rng = random.Random(seed)
        # ids[0] is the most popular under zipf.
        self.ids = [str(i) for i in self._rng.sample(range(ID_LOW, ID_HIGH), spec.k)]
        self._cum: list[float] = []
        if spec.kind == "zipf":
            self._cum = list(itertools.accumulate(1.0 / r**spec.s for r in range(1, spec.k + 1)))

    def next(self) -> str | None:
        if self.spec.kind == "none":
            return None
        if self.spec.kind == "uniform":
            return self._rng.choice(self.ids)
        return self._rng.choices(self.ids, cum_weights=self._cum)[0]

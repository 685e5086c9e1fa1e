"""``python -m balancer.hashing.report``: a reproducible hashing-quality report.

Owns: the report's measurements (``run_report``), its Markdown and JSON forms (``render_markdown``,
``to_json``), the command line (``main``), and ``rendezvous_owner_indexes``, a numpy mirror of
``RendezvousRing.lookup`` (the same 64-bit arithmetic, vectorized; a test checks it against
``lookup`` key for key) that makes million-key rendezvous runs affordable. Every other algorithm
is measured through its real ``lookup``.

For every algorithm in ``ALGORITHMS`` (read at run time), with the ring at both 16 points per
weight (HAProxy's default) and 160 (nginx / Pingora ketama), and for each member count N:
peak-to-mean load (worst of T trials of K fresh random keys), the keys moved when a member joins
or leaves (relative to the ideal share, and whether only the changed member's keys moved), and
the mean time of one ``ring.lookup``. Keys are random 64-bit hex strings from ``random.Random``
seeded per trial, so the same flags give the same balance and movement numbers on every machine.
numpy is imported lazily and only here, never by the routing modules.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import platform
import random
import shlex
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from balancer.hashing import (
    ALGORITHMS,
    Member,
    NoReplicasError,
    RendezvousRing,
    Ring,
    RingSettings,
    build_ring,
    next_state,
)
from balancer.hashing.rendezvous import (
    MULTIPLIER_1,
    MULTIPLIER_2,
    SHIFT_1,
    SHIFT_2,
    SHIFT_3,
    U_SHIFT,
)

if TYPE_CHECKING:
    import numpy
    from numpy.typing import NDArray

COMMAND = "python -m balancer.hashing.report"
DEFAULT_SIZES = (3, 6, 10, 50, 100)
RING_POINTS = (16, 160)  # HAProxy's default; nginx's and Pingora's ketama
_CELLS_PER_CHUNK = 1 << 22  # keys × members per numpy block (~32 MB of uint64)
_NEAR_TIE = 1e-12  # relative score gap under which the mirror defers to the scalar lookup
_TIMING_CHUNK = 1000
TIMING_PASSES = 5  # the best pass is reported: other load on the machine only ever slows one


@dataclass(frozen=True)
class Row:
    """One line of the report: a label and the settings its rings are built with."""

    label: str
    settings: RingSettings


def default_rows() -> tuple[Row, ...]:
    """Every algorithm in ``ALGORITHMS``, the ring once per point count in ``RING_POINTS``."""
    rows: list[Row] = []
    for algorithm in ALGORITHMS:
        if algorithm == "ring":
            points = sorted({*RING_POINTS, RingSettings().points_per_weight})
            rows += [Row("", RingSettings(algorithm="ring", points_per_weight=p)) for p in points]
        else:
            rows.append(Row("", RingSettings(algorithm=algorithm)))
    return tuple(Row(_label(row.settings), row.settings) for row in rows)


def _label(settings: RingSettings) -> str:
    label: str = settings.algorithm
    if settings.algorithm == "ring":
        label = f"ring, {settings.points_per_weight} points"
        if settings.points_per_weight in RING_POINTS:
            label += " (HAProxy)" if settings.points_per_weight == 16 else " (ketama)"
    elif settings.algorithm == "assignment":
        label += " (course scheme)"
    return label + (" (default)" if settings == RingSettings() else "")


@dataclass(frozen=True)
class Config:
    """What to measure. ``lookup_keys=0`` skips timing; ``lookup_n`` adds one timing-only N."""

    keys: int = 1_000_000
    trials: int = 10
    sizes: tuple[int, ...] = DEFAULT_SIZES
    seed: int = 1
    rows: tuple[Row, ...] = field(default_factory=default_rows)
    lookup_keys: int = 200_000
    lookup_n: int = 1000
    lookup_budget: float = 1.0  # CPU seconds per timing pass; slow rings time fewer keys
    command: str = COMMAND


@dataclass
class Cell:
    """Results for one (row, N); None where not measured or the ring could not be built."""

    peak_to_mean: float | None = None
    add_moved: float | None = None  # moved share ÷ 1/(N+1)
    add_only_new: bool | None = None  # every moved key moved to the new member
    remove_moved: float | None = None  # moved share ÷ 1/N
    remove_only_removed: bool | None = None  # every moved key was the removed member's
    lookup_ns: float | None = None
    error: str | None = None


@dataclass
class Report:
    config: Config
    cells: dict[str, dict[int, Cell]]  # row label → N → cell
    python: str
    seconds: float

    def cell(self, label: str, n: int) -> Cell:
        return self.cells[label][n]


def members(n: int) -> list[Member]:
    """``Server 1`` … ``Server N`` with indexes 1 … N and weight 1."""
    return [Member(f"Server {i}", i) for i in range(1, n + 1)]


def make_keys(seed: int, stream: str, count: int) -> list[str]:
    """``count`` random 64-bit keys as 16 hex digits, the same for the same (seed, stream)."""
    text = random.Random(f"chlb-report/{seed}/{stream}").randbytes(8 * count).hex()
    return [text[i : i + 16] for i in range(0, 16 * count, 16)]


@dataclass(frozen=True)
class _Case:
    """The rings of one (row, N): before, after ``Server N+1`` joins, after ``Server 1`` leaves."""

    before: Ring
    added: Ring
    removed: Ring
    new_name: str
    gone_name: str


def _build_case(settings: RingSettings, n: int) -> _Case:
    old = members(n)
    new = Member(f"Server {n + 1}", n + 1)
    return _Case(
        before=build_ring(old, settings),
        added=_changed(old, [*old, new], settings),
        removed=_changed(old, old[1:], settings),
        new_name=new.name,
        gone_name=old[0].name,
    )


def _changed(old: list[Member], new: list[Member], settings: RingSettings) -> Ring:
    """The ring after a change as the balancer builds it: from the state stored with ``old``
    (stateful algorithms move fewer keys that way; stateless ones ignore the state)."""
    stored = next_state([], "", old, settings)
    return build_ring(new, settings, next_state(old, stored, new, settings))


class _Keys:
    """One trial's keys, and their owners on any ring."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self._hashes: dict[tuple[str, int], NDArray[numpy.uint64]] = {}

    def owners(self, ring: Ring, settings: RingSettings) -> list[str]:
        if isinstance(ring, RendezvousRing):
            indexes = rendezvous_owner_indexes(ring, self._key_hashes(ring, settings))
            names = ring.members
            return [names[i] for i in indexes.tolist()]
        return list(map(ring.lookup, self.keys))

    def _key_hashes(self, ring: RendezvousRing, settings: RingSettings) -> NDArray[numpy.uint64]:
        which = (settings.hash_name, settings.hash_seed)
        if which not in self._hashes:
            np = _numpy()
            hashes = (ring.key_hash(k) for k in self.keys)
            self._hashes[which] = np.fromiter(hashes, dtype=np.uint64, count=len(self.keys))
        return self._hashes[which]


def run_report(config: Config, progress: Callable[[str], None] | None = None) -> Report:
    """Measure every (row, N) of ``config``; see the module docstring for what."""
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    cells = {row.label: {n: Cell() for n in config.sizes} for row in config.rows}
    cases: dict[tuple[Row, int], _Case] = {}
    for row in config.rows:
        for n in config.sizes:
            try:
                cases[(row, n)] = _build_case(row.settings, n)
            except (ValueError, LookupError) as e:
                cells[row.label][n].error = f"{type(e).__name__}: {e}"
    for trial in range(config.trials):
        say(f"trial {trial + 1}/{config.trials}: {config.keys:,} keys")
        keys = _Keys(make_keys(config.seed, f"trial {trial}", config.keys))
        for (row, n), case in list(cases.items()):
            cell = cells[row.label][n]
            try:
                _measure(cell, case, keys, row.settings, n, first=trial == 0)
            except (ValueError, LookupError) as e:  # no partial numbers: the cell shows "-"
                cells[row.label][n] = Cell(error=f"{type(e).__name__}: {e}")
                del cases[(row, n)]
    if config.lookup_keys > 0:
        say(f"lookup time: {config.lookup_keys:,} keys")
        _time_all(config, cells, {key: case.before for key, case in cases.items()})
    return Report(config, cells, platform.python_version(), time.perf_counter() - started)


def _measure(
    cell: Cell, case: _Case, keys: _Keys, settings: RingSettings, n: int, *, first: bool
) -> None:
    owners = keys.owners(case.before, settings)
    peak = max(Counter(owners).values()) * n / len(owners)
    cell.peak_to_mean = max(cell.peak_to_mean or 0.0, peak)
    if not first:
        return
    moved = _moved(owners, keys.owners(case.added, settings))
    cell.add_moved = len(moved) / len(owners) * (n + 1)
    cell.add_only_new = all(after == case.new_name for _, after in moved)
    moved = _moved(owners, keys.owners(case.removed, settings))
    cell.remove_moved = len(moved) / len(owners) * n
    cell.remove_only_removed = all(before == case.gone_name for before, _ in moved)


def _moved(before: list[str], after: list[str]) -> list[tuple[str, str]]:
    return [(b, a) for b, a in zip(before, after, strict=True) if b != a]


def _time_all(
    config: Config, cells: dict[str, dict[int, Cell]], built: dict[tuple[Row, int], Ring]
) -> None:
    keys = make_keys(config.seed, "lookup", config.lookup_keys)
    sizes = list(config.sizes)
    if config.lookup_n and config.lookup_n not in sizes:
        sizes.append(config.lookup_n)
    for row in config.rows:
        for n in sizes:
            cell = cells[row.label].setdefault(n, Cell())
            if cell.error is not None:
                continue
            try:
                ring = (
                    built[(row, n)] if (row, n) in built else build_ring(members(n), row.settings)
                )
                cell.lookup_ns = time_lookup(ring, keys, config.lookup_budget)
            except (ValueError, LookupError) as e:
                cell.error = f"{type(e).__name__}: {e}"


def time_lookup(
    ring: Ring, keys: Sequence[str], budget: float, passes: int = TIMING_PASSES
) -> float:
    """Mean ns of this process's CPU time per ``ring.lookup(key)``, best of ``passes`` passes over
    ``keys``; a pass stops early after ``budget`` CPU seconds (at a multiple of 1,000 keys).

    CPU time, not wall time, so other processes competing for the cores do not count (they still
    cost some cache and frequency, which the best pass mostly escapes).
    """
    lookup = ring.lookup
    chunks = [keys[i : i + _TIMING_CHUNK] for i in range(0, len(keys), _TIMING_CHUNK)]
    limit = int(budget * 1e9)
    best = math.inf
    collecting = gc.isenabled()
    gc.disable()
    try:
        for _ in range(passes):
            done, start = 0, time.process_time_ns()
            for chunk in chunks:
                deque(map(lookup, chunk), maxlen=0)
                done += len(chunk)
                if time.process_time_ns() - start > limit:
                    break
            best = min(best, (time.process_time_ns() - start) / done)
    finally:
        if collecting:
            gc.enable()
    return best


# --- the rendezvous mirror -----------------------------------------------------------------


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as e:  # pragma: no cover - numpy is in the dev extra
        raise ImportError(
            "the rendezvous rows need numpy: pip install -e '.[dev]' (or leave out rendezvous "
            "with --algorithms)"
        ) from e
    return numpy


def rendezvous_owner_indexes(
    ring: RendezvousRing, key_hashes: NDArray[numpy.uint64]
) -> NDArray[numpy.intp]:
    """For each key hash, the index in ``ring.members`` of ``ring.lookup_hash(hash)``.

    The same arithmetic as ``RendezvousRing``, vectorized: ``mix64(hash ^ salt) >> 12`` per
    member, compared as integers when weights are equal, else as ``-w / ln(u)``. numpy's ``log``
    may differ from ``math.log`` in the last bit, so keys whose two best scores are that close
    (about one in 10**12) are settled by the scalar ``lookup_hash``.
    """
    np = _numpy()
    scoring = ring.scoring
    if not scoring:
        raise NoReplicasError("the ring is empty")
    n = len(scoring)
    # Columns in descending name order: argmax takes the first maximum, i.e. the greater name.
    salts = np.array([salt for _, salt, _ in reversed(scoring)], dtype=np.uint64)
    weights = np.array([weight for _, _, weight in reversed(scoring)], dtype=np.float64)
    owners: NDArray[numpy.intp] = np.empty(len(key_hashes), dtype=np.intp)
    step = max(1, _CELLS_PER_CHUNK // n)
    for start in range(0, len(key_hashes), step):
        block = key_hashes[start : start + step]
        bits = mirror_bits(np, block, salts)
        if ring.equal_weights:
            owners[start : start + len(block)] = n - 1 - np.argmax(bits, axis=1)
            continue
        scores = -weights / np.log((bits.astype(np.float64) + 0.5) / float(2**52))
        owners[start : start + len(block)] = n - 1 - np.argmax(scores, axis=1)
        if n > 1:
            _settle_near_ties(np, ring, block, scores, owners[start : start + len(block)])
    return owners


def mirror_bits(np: Any, block: Any, salts: Any) -> Any:
    """``mix64(key_hash ^ salt) >> U_SHIFT`` for every (key, member), in place where possible."""
    z = block[:, None] ^ salts[None, :]
    z ^= z >> np.uint64(SHIFT_1)
    z *= np.uint64(MULTIPLIER_1)  # numpy wraps uint64 arrays modulo 2**64, as the & MASK64 does
    z ^= z >> np.uint64(SHIFT_2)
    z *= np.uint64(MULTIPLIER_2)
    z ^= z >> np.uint64(SHIFT_3)
    z >>= np.uint64(U_SHIFT)
    return z


def _settle_near_ties(np: Any, ring: RendezvousRing, block: Any, scores: Any, out: Any) -> None:
    top = np.partition(scores, scores.shape[1] - 2, axis=1)
    best, second = top[:, -1], top[:, -2]
    index = {name: i for i, name in enumerate(ring.members)}
    for i in np.flatnonzero(best - second <= best * _NEAR_TIE).tolist():
        out[i] = index[ring.lookup_hash(int(block[i]))]


# --- output ----------------------------------------------------------------------------------


def to_json(report: Report) -> dict[str, Any]:
    """The report as plain data: the settings, then one record per (row, N)."""
    config = report.config
    return {
        "keys": config.keys,
        "trials": config.trials,
        "seed": config.seed,
        "sizes": list(config.sizes),
        "lookup_keys": config.lookup_keys,
        "python": report.python,
        "command": config.command,
        "seconds": round(report.seconds, 1),
        "rows": [
            {
                "label": row.label,
                "settings": _public(row.settings),
                "n": n,
                **dataclasses.asdict(cell),
            }
            for row in config.rows
            for n, cell in sorted(report.cells[row.label].items())
        ],
    }


def _public(settings: RingSettings) -> dict[str, Any]:
    """The settings without the hash seed, which may be a secret key (siphash)."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if k != "hash_seed"}


def render_markdown(report: Report) -> str:
    """The report as Markdown: a header line, then one table per metric with N as columns."""
    config = report.config
    sizes = list(config.sizes)
    header = (
        f"Keys: {config.keys:,} random 64-bit hex keys per trial · trials: {config.trials} · "
        f"seed: {config.seed} · Python {report.python} · wall time {report.seconds:.0f} s · "
        f"command: `{config.command}`"
    )
    parts = [
        "## Hashing quality",
        "",
        header,
        "",
        "Members are `Server 1` … `Server N` (indexes 1 … N, weight 1). Movement uses the first "
        "trial's keys: `Server N+1` joins, or `Server 1` leaves; a stateful algorithm's new ring "
        "is built from the old ring's state (`next_state`), as the balancer does. "
        "`-`: the ring could not be built or answer.",
        "",
        f"### Peak-to-mean load (worst of {config.trials} trials; 1.000 is perfect)",
        "",
        *_table(report, sizes, lambda c: _number(c.peak_to_mean, 3)),
        _noise_row(config, sizes),
        "",
        "### Keys moved when `Server N+1` joins (moved share ÷ ideal 1/(N+1))",
        "",
        *_table(report, sizes, lambda c: _movement(c.add_moved, c.add_only_new)),
        "",
        "✓ every moved key moved to the new member; ✗ some keys also moved between the others.",
        "",
        "### Keys moved when `Server 1` leaves (moved share ÷ ideal 1/N)",
        "",
        *_table(report, sizes, lambda c: _movement(c.remove_moved, c.remove_only_removed)),
        "",
        "✓ every moved key was `Server 1`'s; ✗ some keys also moved between the others.",
    ]
    if config.lookup_keys > 0:
        timed = sorted({n for row in report.cells.values() for n, c in row.items()})
        parts += [
            "",
            f"### Lookup time (CPU ns per `ring.lookup(key)`: hash + select; best of "
            f"{TIMING_PASSES} passes over {config.lookup_keys:,} keys, each capped at "
            f"{config.lookup_budget:g} s)",
            "",
            *_table(report, timed, lambda c: _number(c.lookup_ns, 0)),
        ]
    return "\n".join(parts) + "\n"


def _table(report: Report, sizes: Sequence[int], show: Callable[[Cell], str]) -> list[str]:
    lines = [
        "| algorithm | " + " | ".join(f"N={n}" for n in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for row in report.config.rows:
        cells = report.cells[row.label]
        shown = [show(cells[n]) if n in cells else "-" for n in sizes]
        lines.append(f"| {row.label} | " + " | ".join(shown) + " |")
    return lines


def _noise_row(config: Config, sizes: Sequence[int]) -> str:
    """One member's load sd from sampling alone, sqrt((N-1)/K) of the mean: a perfect algorithm
    still shows a peak of roughly 1 + 3 sd over N members and several trials."""
    sds = [_number(math.sqrt((n - 1) / config.keys), 4) for n in sizes]
    return "| _sampling sd of one member's load_ | " + " | ".join(sds) + " |"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _movement(ratio: float | None, only_changed: bool | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.3f} " + ("✓" if only_changed else "✗")


# --- command line ----------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError("sizes are member counts of at least 2, e.g. 3,6,10")
    return sizes


def select_rows(names: Iterable[str]) -> tuple[Row, ...]:
    """The default rows whose algorithm is one of ``names`` (``ring`` selects every ring row)."""
    wanted = set(names)
    unknown = wanted - set(ALGORITHMS)
    if unknown:
        raise ValueError(f"unknown algorithms {sorted(unknown)}; choose from {list(ALGORITHMS)}")
    return tuple(row for row in default_rows() if row.settings.algorithm in wanted)


def _rows(text: str) -> tuple[Row, ...]:
    try:
        return select_rows(part.strip() for part in text.split(",") if part.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=_positive, default=Config.keys, help="keys per trial")
    parser.add_argument("--trials", type=_positive, default=Config.trials)
    parser.add_argument("--sizes", type=_sizes, default=DEFAULT_SIZES, help="e.g. 3,6,10,50,100")
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument(
        "--algorithms", type=_rows, default=None, help=f"subset of {','.join(ALGORITHMS)}"
    )
    parser.add_argument(
        "--lookup-keys", type=int, default=Config.lookup_keys, help="0 skips the lookup timing"
    )
    parser.add_argument(
        "--lookup-n", type=int, default=Config.lookup_n, help="an extra N timed only; 0 for none"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(args_list)
    config = Config(
        keys=args.keys,
        trials=args.trials,
        sizes=args.sizes,
        seed=args.seed,
        rows=args.algorithms if args.algorithms is not None else default_rows(),
        lookup_keys=max(0, args.lookup_keys),
        lookup_n=max(0, args.lookup_n),
        command=" ".join([COMMAND, *map(shlex.quote, args_list)]),
    )
    progress = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    report = run_report(config, progress)
    print(json.dumps(to_json(report), indent=2) if args.json else render_markdown(report).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())

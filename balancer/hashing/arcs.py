"""A ring as arcs to draw: who owns which part of the hash space, and each member's share.

Owns ``ring_arcs`` and ``shares`` (and ``Arc``/``RingArcs``/``table_arcs``). The arcs cover
[0, 1) of the hash space with ``(start, end, owner)`` in order, the first starting at 0.0, each
starting where the previous one ended, the last ending at 1.0; adjacent pieces with the same
owner are merged. They are drawn at a resolution of ``bins`` equal bins (each bin shows one
owner), except where the ring has no more positions than bins, which are then drawn exactly.
Per algorithm:

- ``slots`` (``SlotRing.table``, slot = hash & 0xffff) and ``maglev`` (``MaglevRing.table``,
  slot = hash mod 65,537): the table is the circle; each bin shows the owner of the slot in its
  middle. Shares are exact (``Counter(table)``). Both tables scatter every member's slots
  pseudo-randomly, so a bin holds a mix of owners; one sampled slot per bin draws every member
  in proportion to its share (a standard error under 2 points at 720 bins) and repaints
  about the share of bins whose keys a change moves. The owner of most of a bin's slots
  (``table_arcs(..., majority=True)``) does neither: with weights 2:1:1 the weight-2 member
  wins nearly every bin and fills the whole circle.
- ``ring`` (``HashRing.points``/``owners``, 64-bit points): exact arcs between points (a key goes
  to the first point at or after its hash), downsampled to the bins by the owner covering most
  of each bin (arcs there are contiguous, so this is faithful). Shares are exact arc lengths.
- ``assignment`` (``AssignmentRing``): the literal circle of ``M`` slots; every slot drawn with the
  owner of the first virtual server at or after it (``slot_owner``, clockwise), exactly when
  ``M <= bins``. Shares are exact over the 6-digit request ids (100000..999999) the assignment's
  clients send and non-numeric keys are mapped to: ``H(Rid)`` is not uniform over the slots, so
  the shares can differ from the arc lengths.
- ``rendezvous`` and any other ring with no position structure: owners of sampled keys. For
  ``RendezvousRing`` each bin shows the owner of the key hash at its middle (``lookup_hash``),
  so a bin shows who owns that hash; for an unknown ring type the keys are synthetic strings and
  a bin's position means nothing. Shares are estimated from at least ``SAMPLES`` sampled keys
  (``exact`` is False).

Pure: no I/O. Must not import: asyncio, aiohttp, redis, docker, prometheus_client.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from balancer.hashing.assignment import AssignmentRing, request_slot
from balancer.hashing.base import Ring
from balancer.hashing.maglev import MaglevRing
from balancer.hashing.rendezvous import RendezvousRing
from balancer.hashing.ring import HashRing
from balancer.hashing.slots import SlotRing

DEFAULT_BINS = 720
SAMPLES = 16_384  # at least this many sampled lookups for rings without position structure
_SPACE = 1 << 64
RID_LOW, RID_HIGH = 100_000, 1_000_000  # the 6-digit request ids of the assignment


class Arc(NamedTuple):
    """``owner`` owns the hash space from ``start`` to ``end`` (fractions of the circle)."""

    start: float
    end: float
    owner: str


@dataclass(frozen=True)
class RingArcs:
    """What ``ring_arcs`` found.

    Attributes:
        arcs: cover [0, 1) in order (empty for an empty ring).
        shares: each owning member's share of the key space; they sum to 1.
        exact: the shares are exact (False: estimated from sampled keys).
        method: ``table``, ``points``, ``assignment`` or ``sampled``.
    """

    arcs: tuple[Arc, ...]
    shares: dict[str, float]
    exact: bool
    method: str


def ring_arcs(ring: Ring, bins: int = DEFAULT_BINS) -> RingArcs:
    """The arcs and shares of ``ring`` at a resolution of ``bins`` (see the module docstring).

    Raises:
        ValueError: when ``bins < 1``.
    """
    if bins < 1:
        raise ValueError("bins must be at least 1")
    if not ring.members:
        return RingArcs((), {}, True, "empty")
    if isinstance(ring, SlotRing | MaglevRing):
        return _table(ring.table, bins)
    if isinstance(ring, HashRing):
        return _points(ring.points, ring.owners, bins)
    if isinstance(ring, AssignmentRing):
        return _assignment(ring, bins)
    if isinstance(ring, RendezvousRing):
        return _sampled_hashes(ring.lookup_hash, bins)
    return _sampled_keys(ring, bins)


def shares(ring: Ring) -> dict[str, float]:
    """Each owning member's share of the key space (``ring_arcs(ring).shares``, without drawing);
    ``{}`` for an empty ring."""
    return ring_arcs(ring, 1).shares


def table_arcs(table: Sequence[str], bins: int, *, majority: bool = False) -> tuple[Arc, ...]:
    """Arcs of a lookup table (slot ``s`` spans ``[s/n, (s+1)/n)``), every slot exactly when the
    table has no more slots than ``bins``; else per bin the owner of its middle slot, or with
    ``majority`` the owner of most of its slots (see the module docstring for why not)."""
    size = len(table)
    if size <= bins:
        return _merge([(s / size, table[s]) for s in range(size)])
    pieces: list[tuple[float, str]] = []
    for b in range(bins):
        lo, hi = b * size // bins, (b + 1) * size // bins
        owner = _majority(Counter(table[lo:hi])) if majority else table[(lo + hi) // 2]
        pieces.append((lo / size, owner))
    return _merge(pieces)


def _table(table: Sequence[str], bins: int) -> RingArcs:
    size = len(table)
    shares = {name: count / size for name, count in sorted(Counter(table).items())}
    return RingArcs(table_arcs(table, bins), shares, True, "table")


def _points(points: Sequence[int], owners: Sequence[str], bins: int) -> RingArcs:
    """Exact pieces ``(points[i-1], points[i]] → owners[i]``, the wrap-around piece to
    ``owners[0]``; then, per bin, the owner that covers most of it."""
    # Piece boundaries on the integer circle [0, 2**64): piece i ends at ends[i].
    ends = [*points, _SPACE]
    piece_owner = [*owners, owners[0]]
    lengths: Counter[str] = Counter()
    previous = 0
    for end, owner in zip(ends, piece_owner, strict=True):
        lengths[owner] += end - previous
        previous = end
    shares = {name: lengths[name] / _SPACE for name in sorted(lengths)}
    if len(ends) <= bins:  # few enough points: draw them exactly
        pieces = [(0.0, piece_owner[0])]
        pieces += [(p / _SPACE, o) for p, o in zip(points, piece_owner[1:], strict=True)]
        return RingArcs(_merge(pieces), shares, True, "points")
    drawn: list[tuple[float, str]] = []
    i = 0  # the piece that covers the start of the current bin
    for b in range(bins):
        lo, hi = b * _SPACE // bins, (b + 1) * _SPACE // bins
        cover: Counter[str] = Counter()
        at = lo
        while at < hi:
            while ends[i] <= at:
                i += 1
            stop = min(ends[i], hi)
            cover[piece_owner[i]] += stop - at
            at = stop
        drawn.append((lo / _SPACE, _majority(cover)))
    return RingArcs(_merge(drawn), shares, True, "points")


def _assignment(ring: AssignmentRing, bins: int) -> RingArcs:
    size = ring.slots
    clockwise = _clockwise(ring.slot_owner)
    # How many 6-digit request ids land on each slot: H depends only on Rid mod M.
    per_residue = [0] * size
    full, rest = divmod(RID_HIGH - RID_LOW, size)
    for r in range(size):
        per_residue[r] = full
    for rid in range(RID_LOW, RID_LOW + rest):
        per_residue[rid % size] += 1
    counts: Counter[str] = Counter()
    for residue, count in enumerate(per_residue):
        if count:
            counts[clockwise[request_slot(residue, size)]] += count
    total = RID_HIGH - RID_LOW
    shares = {name: counts[name] / total for name in sorted(counts)}
    return RingArcs(table_arcs(clockwise, bins), shares, True, "assignment")


def _clockwise(slot_owner: Sequence[str | None]) -> list[str]:
    """Every slot's owner: the virtual server at or after it, wrapping round."""
    size = len(slot_owner)
    # Slots after the last virtual server wrap round to the first one.
    current = next(o for o in slot_owner if o is not None)
    out = [""] * size
    for s in range(size - 1, -1, -1):
        owner = slot_owner[s]
        if owner is not None:
            current = owner
        out[s] = current
    return out


def _sampled_hashes(lookup_hash: Callable[[int], str], bins: int) -> RingArcs:
    """Bin ``b`` shows the owner of the hash at its middle; the shares count that and
    ``per_bin - 1`` more hashes spread evenly over the bin."""
    per_bin = max(1, -(-SAMPLES // bins))
    counts: Counter[str] = Counter()
    drawn: list[tuple[float, str]] = []
    for b in range(bins):
        middle = ((2 * b + 1) * _SPACE) // (2 * bins)
        owner = lookup_hash(middle)
        counts[owner] += 1
        for j in range(1, per_bin):
            counts[lookup_hash((b * per_bin + j) * _SPACE // (bins * per_bin))] += 1
        drawn.append((b / bins, owner))
    return _sampled_result(drawn, counts)


def _sampled_keys(ring: Ring, bins: int) -> RingArcs:
    """Bin ``b`` shows the owner of the key ``arc-sample-<b>-0``; the shares count that and
    ``per_bin - 1`` more keys per bin."""
    per_bin = max(1, -(-SAMPLES // bins))
    counts: Counter[str] = Counter()
    drawn: list[tuple[float, str]] = []
    for b in range(bins):
        owner = ring.lookup(f"arc-sample-{b}-0")
        counts[owner] += 1
        counts.update(ring.lookup(f"arc-sample-{b}-{j}") for j in range(1, per_bin))
        drawn.append((b / bins, owner))
    return _sampled_result(drawn, counts)


def _sampled_result(drawn: list[tuple[float, str]], counts: Counter[str]) -> RingArcs:
    total = sum(counts.values())
    shares = {name: counts[name] / total for name in sorted(counts)}
    return RingArcs(_merge(drawn), shares, False, "sampled")


def _majority(counts: Counter[str]) -> str:
    """The owner with the largest count; ties go to the smaller name (deterministic)."""
    return min(counts.items(), key=lambda item: (-item[1], item[0]))[0]


def _merge(pieces: Sequence[tuple[float, str]]) -> tuple[Arc, ...]:
    """``(start, owner)`` pieces in order, the first at 0.0, each ending where the next starts
    and the last at 1.0 → arcs with adjacent same-owner pieces merged."""
    arcs: list[Arc] = []
    for i, (start, owner) in enumerate(pieces):
        end = pieces[i + 1][0] if i + 1 < len(pieces) else 1.0
        if end <= start:
            continue  # an empty piece (two points on one hash)
        if arcs and arcs[-1].owner == owner:
            arcs[-1] = Arc(arcs[-1].start, end, owner)
        else:
            arcs.append(Arc(start, end, owner))
    return tuple(arcs)

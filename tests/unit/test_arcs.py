"""``balancer.hashing.arcs``: a ring as arcs covering [0, 1), and each member's key share."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence

import pytest

from balancer.hashing import (
    ALGORITHMS,
    AssignmentRing,
    HashRing,
    Member,
    Ring,
    RingSettings,
    SlotRing,
    build_ring,
)
from balancer.hashing.arcs import (
    RID_HIGH,
    RID_LOW,
    Arc,
    RingArcs,
    ring_arcs,
    shares,
    table_arcs,
)
from balancer.hashing.maglev import MaglevRing
from balancer.hashing.rendezvous import RendezvousRing

MEMBERS = [Member("Server 1", 1), Member("Server 2", 2, weight=2), Member("Server 3", 3)]


def ring_of(algorithm: str, members: Sequence[Member] = MEMBERS) -> Ring:
    return build_ring(members, RingSettings(algorithm=algorithm))  # type: ignore[arg-type]


def check_cover(arcs: Sequence[Arc]) -> None:
    """The arcs tile [0, 1) in order, with no gap, overlap, empty arc or unmerged neighbours."""
    assert arcs[0].start == 0.0
    assert arcs[-1].end == 1.0
    for a, b in itertools.pairwise(arcs):
        assert a.end == b.start
        assert a.owner != b.owner
    assert all(a.start < a.end for a in arcs)


def drawn(arcs: Sequence[Arc]) -> defaultdict[str, float]:
    lengths: defaultdict[str, float] = defaultdict(float)
    for arc in arcs:
        lengths[arc.owner] += arc.end - arc.start
    return lengths


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("bins", [1, 7, 360, 720, 5000])
def test_arcs_cover_the_circle_and_shares_sum_to_one(algorithm: str, bins: int) -> None:
    ring = ring_of(algorithm)
    found = ring_arcs(ring, bins)
    check_cover(found.arcs)
    assert sum(found.shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert set(found.shares) == set(ring.members)
    assert {a.owner for a in found.arcs} <= set(ring.members)
    assert sum(a.end - a.start for a in found.arcs) == pytest.approx(1.0, abs=1e-9)
    if bins == 1:
        assert len(found.arcs) == 1


@pytest.mark.parametrize("algorithm", ["slots", "maglev"])
def test_table_shares_are_the_slot_counts(algorithm: str) -> None:
    ring = ring_of(algorithm)
    assert isinstance(ring, SlotRing | MaglevRing)
    found = ring_arcs(ring, 720)
    counts = Counter(ring.table)
    assert found.exact and found.method == "table"
    assert found.shares == {name: counts[name] / len(ring.table) for name in counts}
    # the weight-2 member owns half of the table
    assert found.shares["Server 2"] == pytest.approx(0.5, abs=1e-3)


def test_table_bins_show_their_middle_or_majority_owner() -> None:
    table = ["a"] * 6 + ["b"] * 2 + ["a", "b", "b"] + ["c"] * 5  # 16 slots
    # 4 bins of 4 slots: a a a a | a a b b (tie: the smaller name) | a b b c | c c c c
    majority = table_arcs(table, 4, majority=True)
    assert majority == (Arc(0.0, 0.5, "a"), Arc(0.5, 0.75, "b"), Arc(0.75, 1.0, "c"))
    # the middle slots: 2, 6, 10, 14 → a, b, b, c
    assert table_arcs(table, 4) == (Arc(0.0, 0.25, "a"), Arc(0.25, 0.75, "b"), Arc(0.75, 1.0, "c"))
    # no more slots than bins: every slot exactly
    exact = table_arcs(table, 16)
    assert drawn(exact) == {"a": 7 / 16, "b": 4 / 16, "c": 5 / 16}
    check_cover(exact)


@pytest.mark.parametrize("algorithm", ["slots", "maglev"])
def test_table_drawing_shows_each_bins_middle_slot_in_proportion(algorithm: str) -> None:
    ring = ring_of(algorithm)
    assert isinstance(ring, SlotRing | MaglevRing)
    size, bins = len(ring.table), 720
    found = ring_arcs(ring, bins)
    for b in range(bins):
        lo, hi = b * size // bins, (b + 1) * size // bins
        arc = next(a for a in found.arcs if a.start <= (lo + hi) / 2 / size < a.end)
        assert arc.owner == ring.table[(lo + hi) // 2]
    # one slot a bin draws every member about in proportion (a majority would not: weight 2
    # of 2:1:1 would win nearly every bin)
    for name, length in drawn(found.arcs).items():
        assert length == pytest.approx(found.shares[name], abs=0.06)
    majority = drawn(table_arcs(ring.table, bins, majority=True))
    assert majority["Server 2"] > 0.9


def test_ring_shares_are_exact_arc_lengths_and_match_sampled_lookups() -> None:
    ring = ring_of("ring")
    assert isinstance(ring, HashRing)
    found = ring_arcs(ring, 720)
    assert found.exact and found.method == "points"
    keys = 40_000
    seen = Counter(ring.lookup(f"sample-{i}") for i in range(keys))
    for name, share in found.shares.items():
        assert seen[name] / keys == pytest.approx(share, abs=0.01)  # > 4 standard errors


def test_ring_arcs_are_exact_between_points() -> None:
    """Few points: the arcs are the points themselves, and a key hashing anywhere in an arc goes
    to that arc's owner."""
    ring = HashRing([Member("a"), Member("b"), Member("c")], lambda data: hash_of[data], 2)
    found = ring_arcs(ring, 720)
    quarter = 1 << 62
    assert ring.points == [quarter, 2 * quarter, 3 * quarter - 10, 3 * quarter, 7 << 61, 15 << 60]
    expected = [
        Arc(0.0, 0.25, "a"),  # [0, first point] → the first point's owner
        Arc(0.25, 0.5, "b"),
        Arc(0.5, 0.75, "c"),  # two points of c's, 10 apart: one arc
        Arc(0.75, 0.875, "a"),
        Arc(0.875, 0.9375, "b"),
        Arc(0.9375, 1.0, "a"),  # past the last point: wraps round to the first point's owner
    ]
    check_cover(found.arcs)
    assert [a.owner for a in found.arcs] == [a.owner for a in expected]
    for got, want in zip(found.arcs, expected, strict=True):
        assert got.start == pytest.approx(want.start) and got.end == pytest.approx(want.end)
    assert found.shares == pytest.approx({"a": 0.4375, "b": 0.3125, "c": 0.25})


hash_of = {
    b"a#0": 1 << 62,
    b"b#0": 2 << 62,
    b"c#0": (3 << 62) - 10,
    b"c#1": 3 << 62,
    b"a#1": 7 << 61,
    b"b#1": 15 << 60,
}


def test_ring_downsampled_to_bins_keeps_the_covering_owner() -> None:
    ring = ring_of("ring")  # 640 points: more than 100 bins
    assert isinstance(ring, HashRing)
    found = ring_arcs(ring, 100)
    check_cover(found.arcs)
    exact = ring_arcs(ring, 10_000)  # the exact arcs
    for b in range(100):
        lo, hi = b / 100, (b + 1) / 100
        cover: defaultdict[str, float] = defaultdict(float)
        for a in exact.arcs:
            overlap = min(a.end, hi) - max(a.start, lo)
            if overlap > 0:
                cover[a.owner] += overlap
        arc = next(a for a in found.arcs if a.start <= (lo + hi) / 2 < a.end)
        assert cover[arc.owner] == pytest.approx(max(cover.values()), rel=1e-6)
    assert found.shares == exact.shares


def test_assignment_draws_the_slot_circle_and_shares_match_request_ids() -> None:
    ring = ring_of("assignment")
    assert isinstance(ring, AssignmentRing)
    found = ring_arcs(ring, 720)  # 512 slots ≤ 720 bins: every slot exactly
    assert found.exact and found.method == "assignment"
    check_cover(found.arcs)
    for slot in range(ring.slots):
        middle = (slot + 0.5) / ring.slots
        arc = next(a for a in found.arcs if a.start <= middle < a.end)
        after = [ring.slot_owner[(slot + k) % ring.slots] for k in range(ring.slots)]
        assert arc.owner == next(o for o in after if o is not None)
    seen = Counter(ring.lookup(str(rid)) for rid in range(RID_LOW, RID_HIGH, 7))
    total = sum(seen.values())
    for name, share in found.shares.items():
        assert seen[name] / total == pytest.approx(share, abs=0.005)


def test_rendezvous_is_sampled_and_close_to_the_weights() -> None:
    ring = ring_of("rendezvous")
    assert isinstance(ring, RendezvousRing)
    found = ring_arcs(ring, 720)
    assert not found.exact and found.method == "sampled"
    weights = {"Server 1": 0.25, "Server 2": 0.5, "Server 3": 0.25}
    assert found.shares == pytest.approx(weights, abs=0.02)
    # each bin shows the owner of the key hash at its middle
    for b in range(720):
        arc = next(a for a in found.arcs if a.start <= (b + 0.5) / 720 < a.end)
        assert arc.owner == ring.lookup_hash((2 * b + 1) * 2**64 // 1440)
    for name, length in drawn(found.arcs).items():
        assert length == pytest.approx(weights[name], abs=0.06)


def test_any_other_ring_is_sampled_by_keys() -> None:
    class Fixed:
        members = ("x", "y")

        def lookup(self, key: str) -> str:
            return "x" if int(key.rsplit("-", 1)[1]) % 4 else "y"

        def candidates(self, key: str, count: int) -> list[str]:
            return [self.lookup(key)]

    found = ring_arcs(Fixed(), 16)  # 1024 keys a bin; bins show the owner of key -0: "y"
    assert found == RingArcs((Arc(0.0, 1.0, "y"),), {"x": 0.75, "y": 0.25}, False, "sampled")


def test_one_member_and_empty_rings() -> None:
    for algorithm in ALGORITHMS:
        found = ring_arcs(ring_of(algorithm, [Member("only", 1)]), 720)
        assert found.arcs == (Arc(0.0, 1.0, "only"),)
        assert found.shares == {"only": 1.0}
        empty = ring_arcs(ring_of(algorithm, [Member("drained", 1, weight=0)]), 720)
        assert empty.arcs == () and empty.shares == {}
    with pytest.raises(ValueError):
        ring_arcs(ring_of("slots"), 0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_shares_alone_equal_the_drawings_shares(algorithm: str) -> None:
    ring = ring_of(algorithm)
    if algorithm == "rendezvous":  # sampled: the same number of keys, other keys
        assert shares(ring) == pytest.approx(ring_arcs(ring).shares, abs=0.02)
    else:
        assert shares(ring) == pytest.approx(ring_arcs(ring).shares, abs=1e-12)
    assert shares(ring_of(algorithm, [Member("drained", 1, weight=0)])) == {}

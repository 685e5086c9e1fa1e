"""The assignment's literal scheme (``algorithm = "assignment"``), checked against hand computation.

Φ(i, j) = i² + j² + 2j + 25 and H(Rid) = Rid² + 2·Rid + 17, both mod M. Every expected slot in
this file was worked out on paper; the comments show the arithmetic.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from balancer.hashing import (
    AssignmentRing,
    Member,
    NoReplicasError,
    Probing,
    RingSettings,
    build_ring,
    make_hash,
)
from balancer.hashing.assignment import request_slot, vnode_slot
from balancer.hashing.hashes import DEFAULT_SEED

S1, S2, S3 = "Server 1", "Server 2", "Server 3"
HASH = make_hash("xxh3", DEFAULT_SEED)


def ring(
    members: list[Member], slots: int = 512, vnodes: int = 9, probing: Probing = "linear"
) -> AssignmentRing:
    return AssignmentRing(members, HASH, slots, vnodes, probing)


def three() -> list[Member]:
    return [Member(S1, 1), Member(S2, 2), Member(S3, 3)]


# M = 512, K = 9, servers 1, 2, 3, linear probing.
# Server 1: 1 + 25 + j² + 2j            → 26 29 34 41 50 61 74 89 106
# Server 2: 4 + 25 + j² + 2j            → 29 (taken by S1 → 30) 32 37 44 53 64 77 92 109
# Server 3: 9 + 25 + j² + 2j            → 34 (taken → 35) 37 (taken → 38) 42 49 58 69 82 97 114
EXPECTED_SLOTS = {
    S1: [26, 29, 34, 41, 50, 61, 74, 89, 106],
    S2: [30, 32, 37, 44, 53, 64, 77, 92, 109],
    S3: [35, 38, 42, 49, 58, 69, 82, 97, 114],
}


def expected_table(slots: int, placement: dict[str, list[int]]) -> list[str | None]:
    table: list[str | None] = [None] * slots
    for name, positions in placement.items():
        for slot in positions:
            table[slot] = name
    return table


def test_formulas_by_hand() -> None:
    assert vnode_slot(1, 0, 512) == 26
    assert vnode_slot(3, 8, 512) == 9 + 64 + 16 + 25 == 114
    assert request_slot(0, 512) == 17
    assert request_slot(22, 512) == (484 + 44 + 17) - 512 == 33
    assert vnode_slot(20, 8, 512) == (400 + 64 + 16 + 25) % 512 == 505


def test_slot_table_m512_k9_three_servers() -> None:
    r = ring(three())
    assert r.slot_owner == expected_table(512, EXPECTED_SLOTS)
    assert r.unplaced == 0
    assert r.members == (S1, S2, S3)


def test_default_settings_build_the_same_table() -> None:
    built = build_ring(three(), RingSettings(algorithm="assignment"))
    assert isinstance(built, AssignmentRing)
    assert built.slot_owner == expected_table(512, EXPECTED_SLOTS)


@pytest.mark.parametrize(
    ("rid", "owner"),
    [
        ("0", S1),  # H = 17 → first occupied ≥ 17 is 26 (S1)
        ("1", S1),  # H = 1 + 2 + 17 = 20 → 26 (S1)
        ("3", S2),  # H = 9 + 6 + 17 = 32 → 32 itself is occupied (S2)
        ("5", S2),  # H = 25 + 10 + 17 = 52 → 53 (S2)
        ("6", S3),  # H = 36 + 12 + 17 = 65 → 69 (S3)
        ("7", S3),  # H = 49 + 14 + 17 = 80 → 82 (S3)
        ("8", S3),  # H = 64 + 16 + 17 = 97 → 97 itself (S3)
        ("9", S1),  # H = 81 + 18 + 17 = 116 > 114 → wraps round to 26 (S1)
        ("21", S1),  # H = 441 + 42 + 17 = 500 → wraps to 26 (S1)
        ("22", S1),  # H = 545 mod 512 = 33 → 34 (S1)
        ("000005", S2),  # leading zeros: still Rid 5
        ("100000", S1),  # 100000 ≡ 160 (mod 512): 160² ≡ 0, +320 +17 = 337 → wraps to 26
        ("100355", S2),  # 100355 ≡ 3 (mod 512) → slot 32 (S2)
        ("100360", S3),  # 100360 ≡ 8 (mod 512) → slot 97 (S3)
    ],
)
def test_lookup_by_hand(rid: str, owner: str) -> None:
    assert ring(three()).lookup(rid) == owner


@pytest.mark.parametrize(
    ("rid", "count", "expected"),
    [
        ("5", 3, [S2, S3, S1]),  # slot 52: 53 S2, 58 S3, 61 S1
        ("5", 2, [S2, S3]),
        ("5", 1, [S2]),
        ("9", 3, [S1, S2, S3]),  # slot 116, wraps: 26 S1, 29 S1, 30 S2, 32 S2, 34 S1, 35 S3
        ("8", 3, [S3, S1, S2]),  # slot 97: 97 S3, 106 S1, 109 S2
        ("8", 10, [S3, S1, S2]),  # never more than the member count
    ],
)
def test_candidates_by_hand(rid: str, count: int, expected: list[str]) -> None:
    assert ring(three()).candidates(rid, count) == expected


def test_candidates_distinct_and_owner_first() -> None:
    r = ring(three())
    rng = random.Random(5)
    for _ in range(500):
        key = str(rng.randint(100_000, 999_999))
        for count in (1, 2, 3, 5):
            got = r.candidates(key, count)
            assert got[0] == r.lookup(key)
            assert len(got) == len(set(got)) == min(count, 3)


def test_candidates_count_zero_returns_nothing() -> None:
    assert ring(three()).candidates("5", 0) == []


def test_linear_vs_quadratic_probing_by_hand() -> None:
    # M = 8, K = 5, one server (i = 1): Φ(1, j) = j² + 2j + 26 mod 8 → 2, 5, 2, 1, 2.
    # linear:    j0 → 2, j1 → 5, j2: 2 taken → 3, j3 → 1, j4: 2, 3 taken → 4
    # quadratic: j0 → 2, j1 → 5, j2: 2 taken → 2+1 = 3, j3 → 1, j4: 2, 3 taken → 2+4 = 6
    linear = ring([Member(S1, 1)], slots=8, vnodes=5, probing="linear")
    quadratic = ring([Member(S1, 1)], slots=8, vnodes=5, probing="quadratic")
    assert linear.slot_owner == expected_table(8, {S1: [1, 2, 3, 4, 5]})
    assert quadratic.slot_owner == expected_table(8, {S1: [1, 2, 3, 5, 6]})
    assert linear.unplaced == quadratic.unplaced == 0


def test_quadratic_probing_between_servers_by_hand() -> None:
    # M = 16, K = 1: S1 at Φ(1,0) = 26 mod 16 = 10, S7 at Φ(7,0) = 74 mod 16 = 10 → conflict;
    # S9 at Φ(9,0) = 106 mod 16 = 10 → conflict.
    # linear:    S7 → 11, S9 → 10, 11 taken → 12
    # quadratic: S7 → 10+1 = 11, S9 → 10, 11 taken → 10+4 = 14
    members = [Member("S9", 9), Member("S1", 1), Member("S7", 7)]
    linear = ring(members, slots=16, vnodes=1, probing="linear")
    quadratic = ring(members, slots=16, vnodes=1, probing="quadratic")
    assert linear.slot_owner == expected_table(16, {"S1": [10], "S7": [11], "S9": [12]})
    assert quadratic.slot_owner == expected_table(16, {"S1": [10], "S7": [11], "S9": [14]})


@pytest.mark.parametrize("probing", ["linear", "quadratic"])
def test_probing_wraps_past_the_last_slot(probing: Probing) -> None:
    # M = 10, K = 2. S1: Φ(1,0) = 26 → 6, Φ(1,1) = 29 → 9.
    # S2: Φ(2,0) = 29 → 9 (taken; 9 = M-1) → probe 9+1 = 10 ≡ 0; Φ(2,1) = 32 → 2.
    r = ring([Member(S1, 1), Member(S2, 2)], slots=10, vnodes=2, probing=probing)
    assert r.slot_owner == [S2, None, S2, None, None, None, S1, None, None, S1]
    # H(0) = 17 → 7 → 9 (S1); H(1) = 20 → 0 (S2); H(2) = 25 → 5 → 6 (S1); H(4) = 41 → 1 → 2 (S2)
    assert [r.lookup(str(rid)) for rid in (0, 1, 2, 4)] == [S1, S2, S1, S2]


def test_linear_probing_wraps_then_fills_and_counts_unplaced() -> None:
    # M = 4, K = 5, S1: Φ(1, j) mod 4 = 2, 1, 2, 1, 2.
    # j0 → 2, j1 → 1, j2: 2 taken → 3, j3: 1, 2, 3 taken → 4 ≡ 0 (wrap), j4: all 4 taken.
    r = ring([Member(S1, 1)], slots=4, vnodes=5, probing="linear")
    assert r.slot_owner == [S1, S1, S1, S1]
    assert r.unplaced == 1


def test_quadratic_probing_can_miss_free_slots() -> None:
    # Same as above with quadratic probing: j2: 2 taken → 2+1 = 3.
    # j3 probes 1, 2, 1+4 ≡ 1, 1+9 ≡ 2 (4 attempts) → unplaced, although slot 0 is free.
    # j4 probes 2, 3, 2+4 ≡ 2, 2+9 ≡ 3 → unplaced.
    r = ring([Member(S1, 1)], slots=4, vnodes=5, probing="quadratic")
    assert r.slot_owner == [None, S1, S1, S1]
    assert r.unplaced == 2


def test_more_vnodes_than_slots_are_counted_unplaced() -> None:
    r = ring([Member(S1, 1), Member(S2, 2)], slots=4, vnodes=3)
    assert r.unplaced == 2 * 3 - 4
    assert None not in r.slot_owner
    r = ring([Member(S1, 1)], slots=2, vnodes=5)
    assert r.unplaced == 3


def test_non_decimal_keys_map_to_a_request_id_deterministically() -> None:
    r = ring(three())
    other = ring(list(reversed(three())))
    for key in ["abc", "user-42", "Server 1", "-5", " 5", "5.0", "١٢٣", ""]:
        rid = r.request_id(key)
        assert rid == 100_000 + HASH(key.encode()) % 900_000
        assert 100_000 <= rid < 1_000_000
        assert rid == other.request_id(key)
        assert r.lookup(key) == r.lookup(str(rid)) == other.lookup(key)
    # Non-ASCII digits are decimal to str.isdecimal but are hashed, not parsed.
    assert r.request_id("١٢٣") != 123
    assert r.request_id("123") == 123


def test_non_decimal_keys_use_the_ring_seed() -> None:
    a = AssignmentRing(three(), make_hash("xxh3", 1), 512, 9, "linear")
    b = AssignmentRing(three(), make_hash("xxh3", 2), 512, 9, "linear")
    keys = [f"user-{n}" for n in range(50)]
    assert [a.request_id(k) for k in keys] != [b.request_id(k) for k in keys]
    assert [a.request_id(str(n)) for n in range(50)] == list(range(50))


def test_weight_zero_members_are_not_placed() -> None:
    r = ring([Member(S1, 1), Member(S2, 2, weight=0), Member(S3, 3)])
    assert S2 not in r.slot_owner
    assert r.members == (S1, S3)
    # Without S2, S3's vnode 2 gets its own slot 37 (S2 no longer holds it).
    assert r.slot_owner[37] == S3
    assert all(r.lookup(str(n)) != S2 for n in range(2000))


def test_order_of_members_does_not_matter() -> None:
    members = [*three(), Member("S10", 10), Member("web", 4)]
    base = ring(members)
    for seed in range(5):
        shuffled = members[:]
        random.Random(seed).shuffle(shuffled)
        assert ring(shuffled).slot_owner == base.slot_owner


def test_empty_ring_raises() -> None:
    for members in ([], [Member(S1, 1, weight=0)]):
        r = ring(members)
        assert r.members == ()
        with pytest.raises(NoReplicasError):
            r.lookup("5")
        with pytest.raises(NoReplicasError):
            r.candidates("5", 2)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="indexes"):
        ring([Member(S1, 1), Member(S2, 1)])
    with pytest.raises(ValueError, match="names"):
        ring([Member(S1, 1), Member(S1, 2)])
    with pytest.raises(ValueError):
        ring(three(), slots=0)
    with pytest.raises(ValueError):
        ring(three(), vnodes=0)


def test_request_hash_reaches_only_87_slots() -> None:
    # H(Rid) mod 512 depends only on Rid mod 512, so range(512) covers every 6-digit id too.
    assert len({request_slot(rid, 512) for rid in range(512)}) == 87


def test_known_skew_at_n3_with_default_settings() -> None:
    """SPEC.md: with the literal formulas one server gets ~80% of traffic at N = 3."""
    r = build_ring(three(), RingSettings(algorithm="assignment"))
    rng = random.Random(1234)
    total = 20_000
    counts = Counter(r.lookup(str(rng.randint(100_000, 999_999))) for _ in range(total))
    top_name, top = counts.most_common(1)[0]
    assert top_name == S1
    assert top / total > 0.70, f"top share {top / total:.3f}"


def test_a_huge_decimal_key_is_hashed_not_parsed() -> None:
    """int() of a 5000-digit string raises (CPython's limit): such a key is hashed instead."""
    from balancer.hashing import Member, RingSettings, build_ring

    ring = build_ring([Member("a", 1), Member("b", 2)], RingSettings(algorithm="assignment"))
    assert ring.lookup("7" * 5000) in ("a", "b")
    assert ring.request_id("123456") == 123456  # type: ignore[attr-defined]
    assert 100_000 <= ring.request_id("9" * 19) < 1_000_000  # type: ignore[attr-defined]

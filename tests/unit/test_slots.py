"""The balanced slot table (the default algorithm): exact balance, least movement, stored state."""

from __future__ import annotations

import collections
import json
import subprocess
import sys

import pytest

from balancer.hashing import Member, NoReplicasError, RingSettings, build_ring, next_state
from balancer.hashing.slots import SLOT_COUNT, SlotRing, decode, rebalance

SLOTS = RingSettings(algorithm="slots")


def members(n: int, start: int = 1) -> list[Member]:
    return [Member(f"Server {i}", i) for i in range(start, start + n)]


def counts(table: tuple[str, ...] | list[str]) -> collections.Counter[str]:
    return collections.Counter(table)


@pytest.mark.parametrize("n", [1, 3, 7, 50, 1000])
def test_every_member_owns_its_share_to_within_one_slot(n: int) -> None:
    held = counts(rebalance(members(n), None))
    assert len(held) == n
    assert max(held.values()) - min(held.values()) <= 1
    assert sum(held.values()) == SLOT_COUNT


def test_weights_are_exact_shares_and_zero_drains() -> None:
    ms = [Member("a", 1, 1), Member("b", 2, 3), Member("c", 3, 0), Member("d", 4, 4)]
    held = counts(rebalance(ms, None))
    assert "c" not in held
    for m, share in (("a", 1 / 8), ("b", 3 / 8), ("d", 4 / 8)):
        assert abs(held[m] - share * SLOT_COUNT) <= 1


def test_adding_moves_exactly_the_new_members_share_and_only_to_it() -> None:
    old = members(50)
    before = rebalance(old, None)
    after = rebalance([*old, Member("Server 51", 51)], before)
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert all(b == "Server 51" for _, b in moved)
    assert len(moved) == counts(after)["Server 51"] == SLOT_COUNT // 51  # 1285 = ⌊65536/51⌋
    assert max(counts(after).values()) - min(counts(after).values()) <= 1


def test_removing_moves_only_the_removed_members_slots() -> None:
    old = members(50)
    before = rebalance(old, None)
    after = rebalance([m for m in old if m.name != "Server 7"], before)
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert {a for a, _ in moved} == {"Server 7"}
    assert len(moved) == counts(before)["Server 7"]
    # The freed slots are dealt evenly: every survivor still owns its share to within one slot.
    assert max(counts(after).values()) - min(counts(after).values()) <= 1


def test_reweighting_moves_only_the_change_in_share() -> None:
    old = members(10)
    before = rebalance(old, None)
    heavier = [Member(m.name, m.index, 3 if m.index == 4 else 1) for m in old]
    after = rebalance(heavier, before)
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert all(b == "Server 4" for _, b in moved)
    assert len(moved) == counts(after)["Server 4"] - counts(before)["Server 4"]


def test_a_balanced_table_is_left_as_it_is() -> None:
    table = rebalance(members(50), None)
    assert rebalance(members(50), table) == table
    evolved = rebalance(members(49, start=2), rebalance(members(51), table))
    assert rebalance(members(49, start=2), evolved) == evolved


def test_each_members_slots_are_spread_over_the_hash_space() -> None:
    """A member's slots are scattered, so its keys' next candidates are many other members."""
    table = rebalance(members(10), None)
    mine = [s for s, owner in enumerate(table) if owner == "Server 1"]
    quarters = collections.Counter(s * 4 // SLOT_COUNT for s in mine)
    assert all(abs(c - len(mine) / 4) < len(mine) * 0.05 for c in quarters.values())
    successors = {table[(s + 1) % SLOT_COUNT] for s in mine} - {"Server 1"}
    assert len(successors) == 9


def test_state_round_trips_and_belongs_to_its_member_set() -> None:
    ms = members(5)
    ring = build_ring(ms, SLOTS)
    assert isinstance(ring, SlotRing)
    state = ring.encoded()
    assert decode(state, ms) == list(ring.table)
    assert decode(state, list(reversed(ms))) == list(ring.table)  # order does not matter
    assert decode(state, members(6)) is None  # written for other members
    assert decode("garbage", ms) is None
    assert decode(state[:-8] + "!!!!!!!!", ms) is None
    assert decode("", ms) is None


def test_next_state_carries_history_and_builds_the_same_ring_everywhere() -> None:
    old = members(8)
    state = next_state([], "", old, SLOTS)
    grown = [*old, Member("Server 9", 9)]
    state2 = next_state(old, state, grown, SLOTS)
    a, b = build_ring(old, SLOTS, state), build_ring(grown, SLOTS, state2)
    assert isinstance(a, SlotRing) and isinstance(b, SlotRing)
    assert sum(x != y for x, y in zip(a.table, b.table, strict=True)) == counts(b.table)["Server 9"]
    # A state that does not fit the members is ignored: the table is rebuilt from nothing.
    assert build_ring(grown, SLOTS, state).table == build_ring(grown, SLOTS).table  # type: ignore[attr-defined]
    # Stateless algorithms carry no state.
    assert next_state(old, "", grown, RingSettings(algorithm="ring")) == ""


def test_same_table_in_another_process() -> None:
    code = (
        "import json; from balancer.hashing import *; "
        "ms=[Member(f'Server {i}', i) for i in range(1, 8)]; "
        "s=RingSettings(algorithm='slots'); st=next_state([], '', ms, s); "
        "ms2=ms[1:]+[Member('Server 9', 9, 2)]; st2=next_state(ms, st, ms2, s); "
        "r=build_ring(ms2, s, st2); "
        "print(json.dumps([st2, [r.lookup(str(k)) for k in range(500)]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    ms = members(7)
    st = next_state([], "", ms, SLOTS)
    ms2 = [*ms[1:], Member("Server 9", 9, 2)]
    st2 = next_state(ms, st, ms2, SLOTS)
    ring = build_ring(ms2, SLOTS, st2)
    assert json.loads(out.stdout) == [st2, [ring.lookup(str(k)) for k in range(500)]]


def test_empty_drained_and_invalid() -> None:
    for ms in ([], [Member("a", 1, 0)]):
        ring = build_ring(ms, SLOTS)
        assert ring.members == ()
        with pytest.raises(NoReplicasError):
            ring.lookup("k")
        with pytest.raises(NoReplicasError):
            ring.candidates("k", 2)
    with pytest.raises(ValueError, match="duplicate"):
        build_ring([Member("a", 1), Member("a", 2)], SLOTS)
    with pytest.raises(ValueError, match="negative"):
        build_ring([Member("a", 1, -1)], SLOTS)


def test_candidates_are_distinct_members_owner_first() -> None:
    ring = build_ring(members(6), SLOTS)
    for key in map(str, range(200)):
        found = ring.candidates(key, 10)
        assert found[0] == ring.lookup(key)
        assert sorted(found) == sorted(ring.members)
    assert ring.candidates("k", 0) == []


def test_a_table_rebuilt_from_its_state_is_the_stored_table_when_remainders_tie() -> None:
    """Weights 1, 1, 4 leave two rounding slots with equal remainders: the members that hold
    one keep it, so the served table is the stored one (and the next change moves the least)."""
    ms = [Member("a", 1, 1), Member("b", 2, 1), Member("c", 3, 4)]
    state = next_state([], "", ms, SLOTS)
    assert list(build_ring(ms, SLOTS, state).table) == decode(state, ms)  # type: ignore[attr-defined]
    for weights in ([1, 1, 4], [2, 3, 7], [1, 2, 3, 4, 5]):
        mixed = [Member(f"m{i}", i + 1, w) for i, w in enumerate(weights)]
        table = rebalance(mixed, None)
        assert rebalance(mixed, table) == table

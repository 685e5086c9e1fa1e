"""The closed-form moved share of rendezvous hashing, by hand and against sampled keys."""

from __future__ import annotations

import random

import pytest

from balancer.hashing import Member, RingSettings, build_ring
from balancer.hashing.hrw_movement import expected_moved_share
from balancer.hashing.movement import ideal_share, moved_share


def members(**weights: int) -> list[Member]:
    return [Member(name, i + 1, w) for i, (name, w) in enumerate(sorted(weights.items()))]


@pytest.mark.parametrize(
    ("old", "new", "share"),
    [
        (members(a=1, b=1, c=1), members(a=1, b=1, c=1, d=1), 1 / 4),  # add one to three
        (members(a=1, b=1, c=1, d=1), members(a=1, b=1, c=1), 1 / 4),  # remove one of four
        (members(a=1, b=1), members(a=2, b=1), 1 / 6),  # a: 1/2 → 2/3 of the keys
        (members(a=1, b=1), members(a=1, b=0), 1 / 2),  # drain b
        (members(a=1, b=1), members(a=5, b=5), 0.0),  # same shares, same winner of every race
        (members(a=1), members(b=1), 1.0),
        (members(), members(), 0.0),
        (members(), members(a=1), 1.0),
        # b down, c up: a key can move from b to a and from a to c, so more than the ideal 1/4.
        # a keeps 1/(1 + max(2, 1) + max(1, 2)) of the keys, b 1/(1 + 1 + 2), c 1/(1 + 1 + 2).
        (members(a=1, b=2, c=1), members(a=1, b=1, c=2), 1 - 1 / 5 - 1 / 4 - 1 / 4),
        # Replace b by c: b's keys split between a and c, and a gives some to c (ideal: 1/2).
        (members(a=1, b=1), members(a=1, c=1), 1 - 1 / 3),
    ],
)
def test_hand_computed_shares(old: list[Member], new: list[Member], share: float) -> None:
    assert expected_moved_share(old, new) == pytest.approx(share, abs=1e-12)


def test_adding_or_removing_members_moves_the_ideal_share() -> None:
    """Only the keys the added members take, or the removed ones held, move."""
    old = [Member(f"Server {i}", i, 1 + i % 3) for i in range(1, 40)]
    added = old + [Member(f"simulated-{i}", 100 + i, 1 + i % 4) for i in range(7)]
    for new in (added, old[5:]):
        assert expected_moved_share(old, new) == pytest.approx(ideal_share(old, new), abs=1e-12)


def test_agrees_with_sampled_keys_on_the_real_ring() -> None:
    settings = RingSettings(algorithm="rendezvous")
    rnd = random.Random(7)
    for _ in range(3):
        old = [Member(f"S{i}", i, rnd.choice([0, 1, 2, 3, 7])) for i in range(1, 6)]
        new = [Member(m.name, m.index, rnd.choice([m.weight, 0, 1, 4])) for m in old[1:]]
        new += [Member(f"N{i}", 10 + i, rnd.choice([1, 2, 5])) for i in range(2)]
        sampled = moved_share(build_ring(old, settings), build_ring(new, settings), sample=16_384)
        # The sample's standard error is at most 0.4 percentage points: allow 5 of them.
        assert expected_moved_share(old, new) == pytest.approx(sampled, abs=0.02)

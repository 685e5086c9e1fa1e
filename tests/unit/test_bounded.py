"""Bounded loads: the cap, the choice among a key's candidates, the ``balance_factor`` setting."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balancer.config import load_settings
from balancer.errors import ConfigError
from balancer.hashing import Member, RingSettings, build_ring
from balancer.hashing.bounded import choose_bounded, load_cap

FAST = settings(max_examples=300, deadline=None)


class Offer:
    """``candidates`` for ``choose_bounded`` from a fixed preference list, recording the calls."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.asked: list[int] = []

    def __call__(self, count: int) -> list[str]:
        self.asked.append(count)
        return self.names[:count]


# --- the cap ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factor", "total", "members", "cap"),
    [
        (1.25, 0, 4, 1),  # never below 1
        (1.25, 7, 2, 5),  # ceil(1.25 × 8 / 2)
        (1.0, 9, 10, 1),  # exactly the mean
        (1.0, 10, 10, 2),
        (2.0, 5, 3, 4),
        (1.1, 49, 1, 55),  # in floats 1.1 × 50 is 55.00000000000001, whose ceiling is 56
        (1.09, 199, 2, 109),  # ditto: 1.09 × 200 / 2 = 109.00000000000001
        (1.25, 3, 0, 5),  # no members: treated as one
    ],
)
def test_load_cap(factor: float, total: int, members: int, cap: int) -> None:
    assert load_cap(factor, total, members) == cap


@FAST
@given(
    thousandths=st.integers(1000, 3000),
    total=st.integers(0, 10_000),
    members=st.integers(1, 200),
)
def test_load_cap_is_the_exact_formula(thousandths: int, total: int, members: int) -> None:
    exact = Fraction(thousandths, 1000) * (total + 1) / members
    assert load_cap(thousandths / 1000, total, members) == max(1, math.ceil(exact))


# --- the choice -------------------------------------------------------------------------------

loads_st = st.lists(st.integers(0, 30), min_size=1, max_size=12)


@FAST
@given(
    loads=loads_st,
    factor=st.floats(1.0, 3.0),
    others=st.integers(0, 5),  # members the ring did not offer
    others_load=st.integers(0, 60),
)
def test_choice_properties(loads: list[int], factor: float, others: int, others_load: int) -> None:
    names = [f"m{i}" for i in range(len(loads))]
    load_of = dict(zip(names, loads, strict=True))
    members = len(names) + others
    total = sum(loads) + (others_load if others else 0)
    offer = Offer(names)

    chosen = choose_bounded(names[0], load_of.__getitem__, total, members, factor, offer)

    cap = load_cap(factor, total, members)
    assert chosen in names
    below = [n for n in names if load_of[n] < cap]
    if load_of[names[0]] < cap:
        assert chosen == names[0]
        assert offer.asked == []  # the ring is not asked for more than the owner
    elif below:
        assert chosen == below[0]  # the first in preference order, not just any below the cap
    else:
        least = min(loads)
        assert chosen == names[loads.index(least)]  # the least loaded, earliest on a tie
    assert load_of[chosen] < cap or not below
    assert all(1 < count <= members for count in offer.asked)
    assert len(offer.asked) <= max(1, math.ceil(math.log2(max(members, 2))))


@FAST
@given(loads=loads_st, factor=st.floats(1.0, 3.0))
def test_with_every_member_offered_the_choice_is_always_below_the_cap(
    loads: list[int], factor: float
) -> None:
    """The paper's guarantee: with c >= 1 the members' loads cannot all reach the cap."""
    names = [f"m{i}" for i in range(len(loads))]
    load_of = dict(zip(names, loads, strict=True))
    total = sum(loads)
    for owner_index in range(len(names)):
        order = names[owner_index:] + names[:owner_index]
        chosen = choose_bounded(
            order[0], load_of.__getitem__, total, len(names), factor, Offer(order)
        )
        assert load_of[chosen] < load_cap(factor, total, len(names))


def test_candidates_are_asked_for_in_doubling_batches() -> None:
    names = [f"m{i}" for i in range(10)]
    loads = dict.fromkeys(names, 5)
    loads["m9"] = 0
    offer = Offer(names)
    # cap = ceil(1.0 × 46 / 10) = 5: everyone but m9 is at the cap.
    assert choose_bounded("m0", loads.__getitem__, 45, 10, 1.0, offer) == "m9"
    assert offer.asked == [2, 4, 8, 10]


def test_a_short_offer_ends_the_search_with_the_least_loaded() -> None:
    loads = {"a": 9, "b": 7, "c": 8}
    offer = Offer(["a", "b", "c"])
    # Twenty members, but the ring offers three (the others cannot take the key).
    assert choose_bounded("a", loads.__getitem__, 40, 20, 1.25, offer) == "b"
    assert offer.asked == [2, 4]


def test_placing_requests_one_by_one_keeps_every_member_under_the_cap() -> None:
    """Simulate a hot key on a real ring: the owner fills to the cap, the rest spills in ring
    order, and no member ever holds more than ceil(c × placed / members)."""
    ring = build_ring([Member(f"Server {i}", i) for i in range(1, 6)], RingSettings())
    order = ring.candidates("hot", 5)
    load = dict.fromkeys(order, 0)
    for placed in range(200):
        chosen = choose_bounded(
            order[0], load.__getitem__, placed, 5, 1.25, lambda n: ring.candidates("hot", n)
        )
        load[chosen] += 1
        assert max(load.values()) <= math.ceil(1.25 * (placed + 1) / 5)
    assert load[order[0]] == max(load.values())
    assert list(load.values()) == sorted(load.values(), reverse=True)  # spills follow ring order


# --- the setting ------------------------------------------------------------------------------


def test_balance_factor_is_off_by_default_and_reaches_the_ring_settings(tmp_path: Path) -> None:
    assert load_settings([], {}).routing.balance_factor == 0.0
    assert load_settings([], {}).ring.balance_factor == 0.0
    assert load_settings(["--balance-factor", "1.25"], {}).ring.balance_factor == 1.25
    assert load_settings([], {"LB_BALANCE_FACTOR": "1"}).routing.balance_factor == 1.0
    config = tmp_path / "lb.toml"
    config.write_text("balance_factor = 2\n")
    assert load_settings(["--config", str(config)], {}).routing.balance_factor == 2.0


@pytest.mark.parametrize("raw", ["0.5", "0.99", "-1", "nan", "inf", "1.25x"])
def test_bad_balance_factors_are_config_errors(raw: str) -> None:
    with pytest.raises(ConfigError, match="balance_factor"):
        load_settings(["--balance-factor", raw], {})


@pytest.mark.parametrize("raw", ["100", "125"])
def test_a_haproxy_percentage_is_refused_with_a_hint(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"1\.25.*not .*percentage"):
        load_settings([], {"LB_BALANCE_FACTOR": raw})
    assert load_settings([], {"LB_BALANCE_FACTOR": "99.5"}).routing.balance_factor == 99.5

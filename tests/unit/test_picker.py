"""The candidate walk (``balancer.hashing.picker``) and the data path's acceptance tests over it
(``balancer.http.choice``): tables of cases, and the old three walks as the reference.

Before the picker, ``Exchange`` walked a key's candidates up to three times: ejected replicas
(``_skip_ejected``), bounded loads (``choose_bounded`` from the replica that left), retries
(``_next_candidate``). ``reference_first`` and ``reference_retry`` below are those walks, kept
here to check that the one walk routes every key of every algorithm as they did.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from balancer.hashing import ALGORITHMS, Algorithm, Member, Ring, RingSettings, build_ring
from balancer.hashing.bounded import choose_bounded, load_cap
from balancer.hashing.picker import Picker
from balancer.http.choice import first_choice, next_candidate, retry_allowed
from balancer.http.outlier import EjectionPolicy, OutlierDetector
from balancer.http.stats import TrafficStats
from balancer.state.store import Membership, Replica
from balancer.state.view import build_snapshot

KEYS = [str(100_000 + i * 7919) for i in range(150)]


def ring_of(algorithm: Algorithm, size: int, *, drained: int = 0) -> Ring:
    members = [Member(f"r{i:02d}", i + 1, 0 if i < drained else 1 + i % 3) for i in range(size)]
    return build_ring(members, RingSettings(algorithm=algorithm))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def detector(ring: Ring, clock: Clock | None = None) -> OutlierDetector:
    """Ejects on the first failure, any share of the members."""
    outlier = OutlierDetector(EjectionPolicy(consecutive=1, max_share=1.0), clock or Clock())
    outlier.retain(ring.members)
    return outlier


def loads(stats: TrafficStats, by_name: dict[str, int]) -> None:
    for name, load in by_name.items():
        stats.replica(name).in_flight = load
    stats.load = sum(by_name.values())


# --- the walk ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("size", "drained"), [(1, 0), (2, 0), (3, 0), (7, 2), (40, 5)])
def test_with_nothing_turned_down_the_walk_is_the_algorithms_candidates(
    algorithm: Algorithm, size: int, drained: int
) -> None:
    ring = ring_of(algorithm, size, drained=drained)
    picker = Picker(ring)
    for key in KEYS:
        walked = picker.candidates(key)
        assert walked == ring.candidates(key, len(ring.members))
        assert walked[0] == ring.lookup(key)
        assert len(set(walked)) == len(walked)  # each candidate offered at most once
        assert picker.pick(key, lambda name: True) == ring.lookup(key)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_pick_offers_each_candidate_once_in_order_until_one_is_accepted(
    algorithm: Algorithm,
) -> None:
    ring = ring_of(algorithm, 9)
    picker = Picker(ring)
    for key in KEYS[:40]:
        order = ring.candidates(key, 9)
        for wanted in order:
            offered: list[str] = []

            def accept(name: str, wanted: str = wanted, offered: list[str] = offered) -> bool:
                offered.append(name)
                return name == wanted

            assert picker.pick(key, accept) == wanted
            assert offered == order[: order.index(wanted) + 1]


def test_nothing_accepted_or_nothing_to_offer_is_none() -> None:
    ring = ring_of("ring", 5)
    assert Picker(ring).pick("k", lambda name: False) is None
    for algorithm in ALGORITHMS:
        empty = Picker(ring_of(algorithm, 3, drained=3))  # every member drained
        assert empty.pick("k", lambda name: True) is None
        assert empty.candidates("k") == []


class CountingRing:
    """A ring of fixed preference lists that records what it is asked."""

    def __init__(self, order: list[str], *, short: int | None = None) -> None:
        self.order = order
        self.short = short  # the ring has only this many candidates for the key
        self.asked: list[int] = []

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(sorted(self.order))

    def lookup(self, key: str) -> str:
        return self.order[0]

    def candidates(self, key: str, count: int) -> list[str]:
        self.asked.append(count)
        return self.order[: min(count, self.short or count)]


@pytest.mark.parametrize(
    ("accepted", "short", "asked"),
    [
        ("a", None, [2]),  # the owner: the first answer has it
        ("b", None, [2]),
        ("c", None, [2, 4]),  # 2, 4, 8, …: each answer a prefix of the next
        ("e", None, [2, 4, 8]),
        ("j", None, [2, 4, 8, 10]),  # never more than the members
        (None, None, [2, 4, 8, 10]),
        (None, 3, [2, 4]),  # the ring ran out of candidates: no more asking
    ],
)
def test_the_ring_is_asked_for_doubling_prefixes(
    accepted: str | None, short: int | None, asked: list[int]
) -> None:
    ring = CountingRing(list("abcdefghij"), short=short)
    assert Picker(ring).pick("k", lambda name: name == accepted) == accepted
    assert ring.asked == asked


def test_a_snapshot_builds_its_picker_once() -> None:
    membership = Membership(epoch=1, replicas=(Replica("a", 1, "h:1"), Replica("b", 2, "h:2")))
    snapshot = build_snapshot(membership, RingSettings())
    assert snapshot.picker is snapshot.picker
    assert snapshot.picker.ring is snapshot.ring and snapshot.picker.size == 2


# --- the first attempt ------------------------------------------------------------------------

# A 4-member ring and a key whose candidates are c0 (its owner), c1, c2, c3.
RING = ring_of("ring", 4)
KEY = KEYS[0]
C = RING.candidates(KEY, 4)


def choose(
    *,
    ejected: tuple[int, ...] = (),
    held: tuple[int, ...] = (),
    load: dict[int, int] | None = None,
    total: int | None = None,
    factor: float = 0.0,
) -> tuple[int, dict[int, int]]:
    """(the candidate index the first attempt goes to, spills by candidate index); ``total``:
    the requests in flight in all (the sum of ``load`` unless given)."""
    outlier = detector(RING)
    for i in ejected:
        assert outlier.failure(C[i]) > 0
    outlier.hold_down({C[i] for i in held})
    stats = TrafficStats()
    loads(stats, {C[i]: n for i, n in (load or {}).items()})
    if total is not None:
        stats.load = total
    chosen = first_choice(Picker(RING), KEY, C[0], outlier, stats, factor)
    spills = {i: stats.replicas[C[i]].spills for i in range(4) if C[i] in stats.replicas}
    return C.index(chosen), {i: n for i, n in spills.items() if n}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ({}, 0),
        ({"ejected": (0,)}, 1),  # an ejected owner is skipped like a replica already tried
        ({"held": (0,)}, 1),  # so is one the health checks hold down
        ({"ejected": (0, 1)}, 2),
        ({"ejected": (1,)}, 0),
        ({"ejected": (0, 2), "held": (1,)}, 3),
        ({"ejected": (0, 1, 2, 3)}, 0),  # every one out: the owner after all
        ({"held": (0, 1, 2, 3)}, 0),
    ],
)
def test_ejected_and_held_down_candidates_are_skipped(case: dict[str, Any], expected: int) -> None:
    assert choose(**case) == (expected, {})


# The cap is ceil(1.25 × (total + 1) / 4). Every candidate is at it only while the loads add up
# to more than the total, which ``total`` forces (a replica's count can lag the total's).
@pytest.mark.parametrize(
    ("case", "expected", "spills"),
    [
        ({"load": {0: 2}}, 1, {0: 1}),  # cap 1: the owner is at it, c1 is below
        ({"load": {0: 1, 1: 1, 2: 1}}, 0, {}),  # cap 2
        ({"load": {1: 5}}, 0, {}),  # another member's load does not matter
        ({"load": {0: 2, 1: 2, 2: 1}}, 2, {0: 1}),  # cap 2: c2 is the first below it
        ({"load": {0: 3, 1: 2, 2: 2, 3: 4}, "total": 0}, 1, {0: 1}),  # all full: least loaded
        ({"load": {0: 3, 1: 3, 2: 3, 3: 3}, "total": 0}, 0, {}),  # a tie: the earliest
        ({"load": {0: 3}, "ejected": (1,)}, 2, {0: 1}),  # bounded loads never undo an ejection
        ({"load": {1: 3}, "ejected": (0,)}, 2, {1: 1}),  # the spill: on the first in routing
        ({"load": {1: 4, 2: 3, 3: 3}, "ejected": (0,), "total": 0}, 2, {1: 1}),
        ({"load": {0: 1, 1: 9, 2: 9, 3: 9}, "ejected": (1, 2, 3), "total": 0}, 0, {}),
        ({"load": {0: 9}, "ejected": (0, 1, 2, 3)}, 0, {}),  # none in routing: the owner
    ],
)
def test_bounded_loads_turn_full_candidates_down(
    case: dict[str, Any], expected: int, spills: dict[int, int]
) -> None:
    assert choose(factor=1.25, **case) == (expected, spills)


def test_an_ejection_that_ended_no_longer_turns_a_candidate_down() -> None:
    clock = Clock()
    outlier = detector(RING, clock)
    ejected_for_s = outlier.failure(C[0])
    stats = TrafficStats()
    assert first_choice(Picker(RING), KEY, C[0], outlier, stats, 0.0) == C[1]
    clock.now += ejected_for_s  # not swept yet: still in the table, no longer in force
    assert C[0] in outlier.ejected
    assert first_choice(Picker(RING), KEY, C[0], outlier, stats, 0.0) == C[0]


def reference_first(
    ring: Ring, key: str, outlier: OutlierDetector, stats: TrafficStats, factor: float
) -> tuple[str, str | None]:
    """The replica the old ``Exchange.start`` chose, and the replica it counted a spill on."""
    owner = name = ring.lookup(key)
    if outlier.ejected and outlier.is_ejected(owner):  # _skip_ejected
        in_routing = [
            n for n in ring.candidates(key, len(outlier.ejected) + 1) if not outlier.is_ejected(n)
        ]
        name = in_routing[0] if in_routing else owner
    if not factor:
        return name, None
    replicas = stats.replicas
    members = len(ring.members)
    st = replicas.get(name)  # _bounded
    if st is None or st.in_flight + st.connecting < load_cap(factor, stats.load, members):
        return name, None

    def load(n: str) -> int:
        if outlier.ejected and outlier.is_ejected(n):
            return 1 << 62
        of = replicas.get(n)
        return 0 if of is None else of.in_flight + of.connecting

    chosen = choose_bounded(
        name, load, stats.load, members, factor, lambda count: ring.candidates(key, count)
    )
    return chosen, (name if chosen != name else None)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_first_attempt_goes_where_the_three_walks_sent_it(algorithm: Algorithm) -> None:
    rng = random.Random(f"first-{algorithm}")
    for size in (1, 2, 5, 12):
        ring = ring_of(algorithm, size)
        picker = Picker(ring)
        names = list(ring.members)
        for _ in range(60):
            outlier = detector(ring)
            for name in rng.sample(names, rng.randint(0, size)):
                outlier.failure(name)
            stats = TrafficStats()
            loads(stats, {name: rng.choice((0, 0, 1, 2, 3, 5, 8)) for name in names})
            factor = rng.choice((0.0, 0.0, 1.0, 1.25, 2.0))
            for key in rng.sample(KEYS, 20):
                want, spilled = reference_first(ring, key, outlier, stats, factor)
                before = {n: st.spills for n, st in stats.replicas.items()}
                got = first_choice(picker, key, ring.lookup(key), outlier, stats, factor)
                after = {n: st.spills for n, st in stats.replicas.items()}
                assert got == want
                assert {n for n in after if after[n] != before.get(n, 0)} == (
                    {spilled} if spilled else set()
                )


# --- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tried", "ejected", "expected"),
    [
        ((0,), (), 1),
        ((0, 1), (), 2),
        ((1,), (), 0),  # tried: the replicas this request tried, whatever their place
        ((0,), (1,), 2),  # an ejected candidate is skipped
        ((0,), (1, 2, 3), 1),  # only ejected ones left: the first one not tried
        ((0, 2), (1, 3), 1),
        ((0, 1, 2, 3), (), None),  # every candidate tried: no retry
        ((0, 1, 2, 3), (0, 1), None),
    ],
)
def test_a_retry_goes_to_the_first_candidate_not_tried_and_in_routing(
    tried: tuple[int, ...], ejected: tuple[int, ...], expected: int | None
) -> None:
    outlier = detector(RING)
    for i in ejected:
        outlier.failure(C[i])
    got = next_candidate(Picker(RING), KEY, [C[i] for i in tried] + ["gone"], outlier)
    assert got == (None if expected is None else C[expected])


def reference_retry(ring: Ring, key: str, tried: list[str], outlier: OutlierDetector) -> str | None:
    """The old ``Exchange._next_candidate``."""
    ejected = outlier.ejected
    fallback = None
    for name in ring.candidates(key, len(tried) + len(ejected) + 1):
        if name in tried:
            continue
        if ejected and outlier.is_ejected(name):
            fallback = fallback or name
            continue
        return name
    return fallback


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_retries_go_where_the_old_walk_sent_them(algorithm: Algorithm) -> None:
    rng = random.Random(f"retry-{algorithm}")
    for size in (1, 3, 8):
        ring = ring_of(algorithm, size)
        picker = Picker(ring)
        for _ in range(40):
            outlier = detector(ring)
            for name in rng.sample(list(ring.members), rng.randint(0, size)):
                outlier.failure(name)
            for key in rng.sample(KEYS, 10):
                tried = [ring.lookup(key)]
                while True:  # retry until no candidate is left: each one tried at most once
                    want = reference_retry(ring, key, tried, outlier)
                    got = next_candidate(picker, key, tried, outlier)
                    assert got == want
                    if got is None:
                        break
                    assert got not in tried
                    tried.append(got)
                assert sorted(tried) == sorted(ring.members)


@pytest.mark.parametrize(
    ("method", "sent", "replay", "attempts", "allowed"),
    [
        (b"POST", False, False, 0, True),  # nothing reached the replica: any method
        (b"POST", True, True, 0, False),  # bytes sent: retry methods only
        (b"GET", True, True, 0, True),
        (b"GET", True, False, 0, False),  # not kept whole for a replay
        (b"GET", True, True, 2, False),  # retries spent
        (b"GET", False, True, 1, True),
    ],
)
def test_which_failed_attempts_may_go_again(
    method: bytes, sent: bool, replay: bool, attempts: int, allowed: bool
) -> None:
    fe: Any = SimpleNamespace(retries=2, retry_methods=frozenset({b"GET", b"HEAD"}))
    assert retry_allowed(fe, method, sent=sent, replay=replay, attempts=attempts) is allowed

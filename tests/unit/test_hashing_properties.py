"""Property tests (hypothesis) for every algorithm ``build_ring`` offers.

Four properties, each checked for every algorithm that has it, against the bounds in ``BOUNDS``:

1. Determinism across processes: the same members, settings and membership history give the
   same owners, retry candidates and stored state in another Python process (with another
   ``PYTHONHASHSEED``), and the order the members are listed in does not matter.
2. Minimal movement: on an add every key that moves goes to the joiner, on a remove only the
   leaver's keys move (key by key); where an algorithm does not promise that, its measured bound
   on moved share ÷ ideal share.
3. Weight proportionality: a member's share of the key space is its share of the weight, within
   the algorithm's own imbalance plus sampling noise; weight 0 owns nothing.
4. Bounded loads: a request placed through ``choose_bounded`` with the ring's candidates never
   lifts its member above the cap computed when it was placed, unless every candidate the
   caller could offer was already at the cap.

Example counts are sized so that the whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from balancer.hashing import (
    ALGORITHMS,
    Algorithm,
    MaglevRing,
    Member,
    NoReplicasError,
    Ring,
    RingSettings,
    SlotRing,
    build_ring,
    next_state,
)
from balancer.hashing.bounded import choose_bounded, load_cap
from balancer.hashing.maglev import DEFAULT_TABLE_SIZE
from balancer.hashing.movement import ideal_share, moved_share
from balancer.hashing.slots import SLOT_COUNT

# --- the bounds ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """What one algorithm is held to below."""

    minimal: bool  # on an add keys move only to the joiner; on a remove only the leaver's move
    moved_over_ideal: float | None  # most moved_share / ideal_share of one add or remove
    weighted: bool  # shares follow weights (False: a weight only switches a member on or off)
    slack_per_weight: float  # hard |share - weight/total| allowed per weight unit
    points_per_weight: int  # ring points per weight unit (0: not a ring)


BOUNDS: dict[Algorithm, Bound] = {
    # slots: rebalance frees only the departed members' slots and each member's excess over its
    # new quota, and quotas are the weight shares rounded to whole slots (largest remainder,
    # slots.py). So movement is minimal, the moved share is the ideal share within one slot per
    # member (checked on the whole table), and every member owns its share within one slot.
    "slots": Bound(True, None, True, 1 / SLOT_COUNT, 0),
    # ring (ketama): points depend only on their own member, so a change moves exactly the arcs
    # the changed member's points cover. Its imbalance is the arc lengths: a member with
    # 160·w of the 160·W points owns a Beta(160w, 160(W-w)) share, sd sqrt(p(1-p)/(160W+1))
    # (RingSettings.points_per_weight = 160).
    "ring": Bound(True, None, True, 0.0, 160),
    # assignment (the course's literal scheme): NOT minimal. Servers are placed in index order
    # and probe past taken slots, so a joiner below the top index displaces later servers'
    # virtual servers. Weights only switch a server on or off (every server gets K = 9 virtual
    # servers). What holds: determinism, weight 0 drains, and movement is minimal for a joiner
    # or leaver with the highest index (its virtual servers are placed last); tested below.
    "assignment": Bound(False, None, False, 0.0, 0),
    # maglev: not minimal (the table is refilled from the permutations). Measured moved/ideal,
    # exact over the 65,537-entry tables, for 1,300 random member sets (1-20 members, weights
    # 0-4, 550 of them with 16-20 members), each with one add (weight 1-4) and one remove:
    # mean 1.00 at 1-2 live members, rising to 1.06-1.11 at 18-20; worst 1.184 (a remove at 18
    # live members, weights 1-4; equal weights at 18-20 members: worst 1.08). 1.35 leaves a
    # 14% margin over the worst seen. Its table gives each member `weight` slots per round
    # until it is full, so a member owns between r·w and (r+1)·w of the 65,537 slots:
    # |share - w/W| <= w / 65,537, exactly.
    "maglev": Bound(False, 1.35, True, 1 / DEFAULT_TABLE_SIZE, 0),
    # rendezvous (weighted HRW): a member's score for a key does not depend on the others, so
    # only the changed member's keys move; each key independently goes to a member with
    # probability exactly w/W (the logarithmic method), so the only imbalance is sampling.
    "rendezvous": Bound(True, None, True, 0.0, 0),
}

# Sampled shares must be within Z standard deviations (sampling and the algorithm's own spread)
# plus the hard slack above. P(|N(0,1)| > 6) = 2e-9 per member checked; a run checks ~400.
# The model is calibrated: over random member sets the measured z-scores have rms 0.99 (ring,
# 2,439 members), 1.02 (maglev, 325) and 1.02 (rendezvous, 325); worst |z| 3.15.
Z = 6.0
SHARE_KEYS = [f"share-{i}" for i in range(20_000)]


def _fixed_unicode_keys(count: int) -> list[str]:
    r = random.Random(3)
    ranges = [(0x20, 0x7F), (0xA0, 0xD7FF), (0xE000, 0xFFFD), (0x1F300, 0x1F64F)]
    return [
        "".join(chr(r.randrange(*r.choice(ranges))) for _ in range(r.randrange(1, 12)))
        for _ in range(count)
    ]


# Decimal keys too: the assignment scheme uses a decimal key as its own request id.
KEYS = (
    [f"key-{i}" for i in range(300)]
    + [str(n) for n in range(100_000, 100_300, 3)]
    + _fixed_unicode_keys(100)
)

# --- strategies ------------------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)  # no lone surrogates
indexes = st.integers(1, 10_000)


T = TypeVar("T")


def fresh(value: T, taken: Collection[T], bump: Callable[[T], T]) -> T:
    """``value``, bumped until it is not in ``taken`` (distinct by construction: no filtering,
    so no example is thrown away for a repeated name or index)."""
    while value in taken:
        value = bump(value)
    return value


def fresh_name(name: str, taken: Collection[str]) -> str:
    return fresh(name, taken, lambda n: n + "'")


def fresh_index(index: int, taken: Collection[int]) -> int:
    return fresh(index, taken, lambda i: i + 1)


@st.composite
def member_lists(draw: st.DrawFn, min_size: int = 1, max_size: int = 20) -> list[Member]:
    """Members with distinct names and distinct indexes, weights 0-4."""
    n = draw(st.integers(min_size, max_size))
    members: list[Member] = []
    for name, index, weight in draw(
        st.lists(st.tuples(names, indexes, st.integers(0, 4)), min_size=n, max_size=n)
    ):
        name = fresh_name(name, {m.name for m in members})
        index = fresh_index(index, {m.index for m in members})
        members.append(Member(name, index, weight))
    return members


@st.composite
def live_member_lists(draw: st.DrawFn, min_size: int = 1, max_size: int = 20) -> list[Member]:
    """``member_lists`` where at least one member has weight (the first, if none had)."""
    members = draw(member_lists(min_size, max_size))
    if all(m.weight == 0 for m in members):
        members[0] = Member(members[0].name, members[0].index, 1)
    return members


@st.composite
def histories(draw: st.DrawFn) -> list[list[Member]]:
    """A member set, then 1-3 changes (a join, a leave or a new weight); may end up empty."""
    current = draw(member_lists())
    steps = [current]
    for _ in range(draw(st.integers(1, 3))):
        change = draw(st.sampled_from(["join", "leave", "weight"]) if current else st.just("join"))
        if change == "join":
            name = fresh_name(draw(names), {m.name for m in current})
            index = fresh_index(draw(indexes), {m.index for m in current})
            current = [*current, Member(name, index, draw(st.integers(0, 4)))]
        else:
            i = draw(st.integers(0, len(current) - 1))
            if change == "leave":
                current = [*current[:i], *current[i + 1 :]]
            else:
                m = Member(current[i].name, current[i].index, draw(st.integers(0, 4)))
                current = [*current[:i], m, *current[i + 1 :]]
        steps.append(current)
    return steps


# --- helpers ---------------------------------------------------------------------------------


def replay(history: Sequence[Sequence[Member]], ring_settings: RingSettings) -> tuple[Ring, str]:
    """The ring for the last member set of ``history`` and its stored state, built as the
    balancer builds it: each change's state derived from the previous one with ``next_state``."""
    previous: Sequence[Member] = []
    state = ""
    for members in history:
        state = next_state(previous, state, members, ring_settings)
        previous = members
    return build_ring(previous, ring_settings, state), state


def ring_for(algorithm: Algorithm, members: Sequence[Member]) -> tuple[Ring, str]:
    return replay([members], RingSettings(algorithm=algorithm))


def changed(algorithm: Algorithm, old: Sequence[Member], state: str, new: Sequence[Member]) -> Ring:
    """The ring after ``old`` (stored with ``state``) becomes ``new``."""
    ring_settings = RingSettings(algorithm=algorithm)
    return build_ring(new, ring_settings, next_state(old, state, new, ring_settings))


def owner(ring: Ring, key: str) -> str | None:
    try:
        return ring.lookup(key)
    except NoReplicasError:
        return None


def everywhere(ring: Ring, keys: Sequence[str] = KEYS) -> list[str | None]:
    """Owners of the whole key space where the ring is a table (every slot), else of ``keys``."""
    if isinstance(ring, SlotRing):
        return list(ring.table) if ring.table else [None] * SLOT_COUNT
    if isinstance(ring, MaglevRing):
        return list(ring.table) if ring.table else [None] * DEFAULT_TABLE_SIZE
    return [owner(ring, key) for key in keys]


def answers(ring: Ring, state: str) -> dict[str, Any]:
    """Everything another process must agree on: owners, 3 retry candidates, stored state."""
    if not ring.members:
        return {"state": state, "owners": [owner(ring, k) for k in KEYS], "candidates": []}
    return {
        "state": state,
        "owners": [ring.lookup(k) for k in KEYS],
        "candidates": [ring.candidates(k, 3) for k in KEYS],
    }


def outcome(history: Sequence[Sequence[Member]], algorithm: Algorithm) -> dict[str, Any]:
    """``answers`` for the ring ``history`` ends in, or the error building it raised."""
    try:
        return answers(*replay(history, RingSettings(algorithm=algorithm)))
    except Exception as e:  # compared like an answer; the test then fails on it
        return {"error": f"{type(e).__name__}: {e}"}


def as_data(history: Sequence[Sequence[Member]]) -> list[list[list[Any]]]:
    return [[[m.name, m.index, m.weight] for m in members] for members in history]


def serve() -> None:
    """The other process: one JSON request per stdin line, one JSON answer per stdout line."""
    print(json.dumps({"str_hash": hash("chlb")}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        history = [[Member(*m) for m in members] for members in request["history"]]
        print(json.dumps(outcome(history, request["algorithm"])), flush=True)


class Worker:
    """A second Python process that answers ``answers`` for a history (see ``serve``)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        # A different str hash seed than ours, so accidental use of hash() shows up.
        env["PYTHONHASHSEED"] = "1" if os.environ.get("PYTHONHASHSEED") == "0" else "0"
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from tests.unit.test_hashing_properties import serve; serve()"],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.str_hash = self.receive()["str_hash"]

    def send(self, algorithm: Algorithm, history: Sequence[Sequence[Member]]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"algorithm": algorithm, "history": as_data(history)}))
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the worker process died (exit code {self.process.poll()})"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.process.stdout.close()


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    process = Worker()
    try:
        yield process
    finally:
        process.close()


def budget(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None)


# --- 1. determinism --------------------------------------------------------------------------

# Examples per algorithm: a slots or maglev build costs ~40 / ~150 ms (65,536-entry tables).
DETERMINISM_EXAMPLES: dict[Algorithm, int] = {
    "slots": 10,
    "ring": 20,
    "assignment": 40,
    "maglev": 5,
    "rendezvous": 20,
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_same_answers_in_another_process_and_in_any_member_order(
    algorithm: Algorithm, worker: Worker
) -> None:
    assert worker.str_hash != hash("chlb"), "the worker must run with another str hash seed"

    @budget(DETERMINISM_EXAMPLES[algorithm])
    @given(history=histories(), data=st.data())
    def check(history: list[list[Member]], data: st.DataObject) -> None:
        shuffled = [data.draw(st.permutations(members)) for members in history]
        worker.send(algorithm, history)  # the worker computes while we do
        try:
            here = outcome(history, algorithm)
            reordered = outcome(shuffled, algorithm)
        finally:
            there = worker.receive()  # always, so no answer is left for the next example
        assert "error" not in here, here["error"]
        assert reordered == here, "member order mattered"
        assert there == here, "another process gave other answers"

    check()


# --- 2. minimal movement ---------------------------------------------------------------------

MOVEMENT_EXAMPLES: dict[Algorithm, int] = {"slots": 12, "ring": 30, "rendezvous": 30}
MINIMAL = [a for a in ALGORITHMS if BOUNDS[a].minimal]


@pytest.mark.parametrize("algorithm", MINIMAL)
def test_on_an_add_keys_move_only_to_the_joiner(algorithm: Algorithm) -> None:
    @budget(MOVEMENT_EXAMPLES[algorithm])
    @given(members=member_lists(min_size=1, max_size=21))
    def check(members: list[Member]) -> None:
        old, joiner = members[:-1], members[-1]
        before, state = ring_for(algorithm, old)
        after = changed(algorithm, old, state, members)
        moved = Counter(
            (a, b) for a, b in zip(everywhere(before), everywhere(after), strict=True) if a != b
        )
        assert all(b == joiner.name for _, b in moved), f"moved between old members: {moved}"
        if joiner.weight == 0:
            assert not moved

    check()


@pytest.mark.parametrize("algorithm", MINIMAL)
def test_on_a_remove_only_the_leavers_keys_move(algorithm: Algorithm) -> None:
    @budget(MOVEMENT_EXAMPLES[algorithm])
    @given(members=member_lists(min_size=1), which=st.integers(0, 19))
    # A regression case: weights 1, 1, 4 leave two slots of rounding with equal remainders;
    # quotas() once broke that tie by raw slot count, so the table rebuilt from its own state
    # differed from the stored one and removing a moved one slot between survivors.
    @example(members=[Member("a", 1, 1), Member("b", 2, 1), Member("c", 3, 4)], which=0)
    def check(members: list[Member], which: int) -> None:
        leaver = members[which % len(members)]
        rest = [m for m in members if m != leaver]
        before, state = ring_for(algorithm, members)
        after = changed(algorithm, members, state, rest)
        moved = Counter(
            (a, b) for a, b in zip(everywhere(before), everywhere(after), strict=True) if a != b
        )
        assert all(a == leaver.name for a, _ in moved), f"moved between survivors: {moved}"

    check()


@budget(15)
@given(members=live_member_lists(min_size=2, max_size=21), which=st.integers(0, 20))
def test_slots_move_the_ideal_share_within_one_slot_per_member(
    members: list[Member], which: int
) -> None:
    """Over the whole table, for an add (the last member joins) and a remove: the moved share
    is the ideal share to within one slot per member, and no share at all when the ideal is 0
    (a weight-0 member joins or leaves)."""
    old = members[:-1]
    before, state = ring_for("slots", old)
    for new in (members, [m for m in old if m != old[which % len(old)]]):
        after = changed("slots", old, state, new)
        moved, ideal = moved_share(before, after), ideal_share(old, new)
        assert abs(moved - ideal) <= len(members) / SLOT_COUNT, (moved, ideal)
        if ideal == 0:
            assert moved == 0


@budget(8)
@given(members=live_member_lists(min_size=2, max_size=21), which=st.integers(0, 19))
def test_maglev_moves_at_most_its_measured_multiple_of_the_ideal_share(
    members: list[Member], which: int
) -> None:
    """Exact over the tables, for an add (the last member joins) and a remove."""
    bound = BOUNDS["maglev"].moved_over_ideal
    assert bound is not None
    old = members[:-1]
    before, _ = ring_for("maglev", old)
    for new in (members, [m for m in old if m != old[which % len(old)]]):
        after, _ = ring_for("maglev", new)
        moved, ideal = moved_share(before, after), ideal_share(old, new)
        assert moved <= bound * ideal, f"moved {moved:.4f}, ideal {ideal:.4f}"


@pytest.mark.parametrize("change", ["join", "leave"])
@budget(30)
@given(members=live_member_lists(min_size=2, max_size=21))
def test_assignment_is_minimal_only_at_the_top_index(change: str, members: list[Member]) -> None:
    """The course scheme is not minimal in general (a lower-index joiner re-probes every later
    server), but a server with the highest index places its virtual servers last, into slots
    nobody else took, so its join or leave moves only its own keys."""
    if change == "join":  # the last member joins with an index above every other
        old = members[:-1]
        last = members[-1]
        mover = Member(last.name, max(m.index for m in old) + 1, last.weight)
        new = [*old, mover]
    else:
        old = members
        mover = max(members, key=lambda m: m.index)
        new = [m for m in members if m != mover]
    before, _ = ring_for("assignment", old)
    after, _ = ring_for("assignment", new)
    for key in KEYS:
        a, b = owner(before, key), owner(after, key)
        if a != b:
            assert mover.name in (a, b), f"{key!r} moved from {a!r} to {b!r}"


# --- 3. weight proportionality ---------------------------------------------------------------


@budget(10)
@given(history=histories())
def test_slots_own_their_weight_share_within_one_slot_after_any_history(
    history: list[list[Member]],
) -> None:
    ring, _ = replay(history, RingSettings(algorithm="slots"))
    assert isinstance(ring, SlotRing)
    members = history[-1]
    total = sum(m.weight for m in members)
    held = Counter(ring.table)
    if total == 0:
        assert not ring.table
        return
    assert len(ring.table) == SLOT_COUNT
    for m in members:
        assert abs(held[m.name] - SLOT_COUNT * m.weight / total) < 1, m


@budget(5)
@given(members=live_member_lists())
def test_maglev_table_shares_are_within_one_round_of_turns(members: list[Member]) -> None:
    ring, _ = ring_for("maglev", members)
    assert isinstance(ring, MaglevRing)
    total = sum(m.weight for m in members)
    held = Counter(ring.table)
    assert len(ring.table) == DEFAULT_TABLE_SIZE
    for m in members:
        slack = m.weight * BOUNDS["maglev"].slack_per_weight * DEFAULT_TABLE_SIZE
        assert abs(held[m.name] - DEFAULT_TABLE_SIZE * m.weight / total) <= slack, m


SHARE_EXAMPLES: dict[Algorithm, int] = {"slots": 8, "ring": 30, "maglev": 5, "rendezvous": 6}
WEIGHTED = [a for a in ALGORITHMS if BOUNDS[a].weighted]


def share_tolerance(bound: Bound, weight: int, total: int, keys: int) -> float:
    """How far a member's count of ``keys`` sampled keys may stray from keys·w/W: Z sd of the
    sampling (binomial) and of the algorithm's own spread (Beta for a ring), plus hard slack."""
    p = weight / total
    variance = keys * p * (1 - p)
    if bound.points_per_weight:
        variance += keys**2 * p * (1 - p) / (bound.points_per_weight * total + 1)
    return Z * math.sqrt(variance) + keys * weight * bound.slack_per_weight


@pytest.mark.parametrize("algorithm", WEIGHTED)
def test_sampled_shares_follow_weights(algorithm: Algorithm) -> None:
    bound = BOUNDS[algorithm]

    @budget(SHARE_EXAMPLES[algorithm])
    @given(members=live_member_lists())
    def check(members: list[Member]) -> None:
        ring, _ = ring_for(algorithm, members)
        counts = Counter(map(ring.lookup, SHARE_KEYS))
        total = sum(m.weight for m in members)
        for m in members:
            expected = len(SHARE_KEYS) * m.weight / total
            tolerance = share_tolerance(bound, m.weight, total, len(SHARE_KEYS))
            assert abs(counts[m.name] - expected) <= tolerance, (m, counts[m.name], expected)

    check()


DRAIN_EXAMPLES: dict[Algorithm, int] = {
    "slots": 10,
    "ring": 20,
    "assignment": 30,
    "maglev": 5,
    "rendezvous": 20,
}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_weight_zero_is_never_an_owner_or_a_candidate(algorithm: Algorithm) -> None:
    @budget(DRAIN_EXAMPLES[algorithm])
    @given(members=member_lists())
    def check(members: list[Member]) -> None:
        ring, _ = ring_for(algorithm, members)
        live = sorted(m.name for m in members if m.weight > 0)
        assert list(ring.members) == live
        if not live:
            with pytest.raises(NoReplicasError):
                ring.lookup("x")
            return
        owners = set(everywhere(ring))
        assert owners <= set(live)
        if isinstance(ring, SlotRing | MaglevRing):  # the whole table: every live member owns
            assert owners == set(live)
        for key in KEYS[:50]:
            assert sorted(ring.candidates(key, len(members))) == live

    check()


# --- 4. bounded loads ------------------------------------------------------------------------

BOUNDED_EXAMPLES: dict[Algorithm, int] = {
    "slots": 12,
    "ring": 20,
    "assignment": 25,
    "maglev": 5,
    "rendezvous": 20,
}
HOT_KEYS = [f"hot-{i}" for i in range(40)]
# A stream of requests for keys from a small pool, so keys repeat and their owners fill up.
requests = st.lists(st.integers(0, len(HOT_KEYS) - 1), min_size=50, max_size=300)


def offered_by(
    ring: Ring, key: str, reach: int, asked: list[list[str]]
) -> Callable[[int], list[str]]:
    """``candidates`` for ``choose_bounded``: the ring's, cut at ``reach`` (a caller that can
    offer only some members), recording every answer."""

    def offer(count: int) -> list[str]:
        got = ring.candidates(key, min(count, reach))
        asked.append(got)
        return got

    return offer


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bounded_choice_never_lifts_a_member_over_the_cap(algorithm: Algorithm) -> None:
    @budget(BOUNDED_EXAMPLES[algorithm])
    @given(
        members=live_member_lists(),
        factor=st.floats(1.0, 3.0),
        stream=requests,
        churn=st.floats(0.0, 1.0),
        reach=st.one_of(st.just(1_000), st.integers(1, 20)),
        completions=st.randoms(use_true_random=False),
    )
    def check(
        members: list[Member],
        factor: float,
        stream: list[int],
        churn: float,
        reach: int,
        completions: random.Random,
    ) -> None:
        """Before each request 0-2 requests in flight complete (``churn`` of them on average,
        picked at random), so the load rises and falls; ``reach`` < members is a caller that
        can offer only that many candidates."""
        ring, _ = ring_for(algorithm, members)
        n = len(ring.members)
        load: Counter[str] = Counter()
        in_flight: list[str] = []
        for key_number in stream:
            for _ in range(2):
                if in_flight and completions.random() < churn / 2:
                    load[in_flight.pop(completions.randrange(len(in_flight)))] -= 1
            key = HOT_KEYS[key_number]
            total = len(in_flight)
            cap = load_cap(factor, total, n)
            asked: list[list[str]] = []
            offer = offered_by(ring, key, reach, asked)
            chosen = choose_bounded(ring.lookup(key), load.__getitem__, total, n, factor, offer)

            for shorter, longer in pairwise(asked):
                assert longer[: len(shorter)] == shorter, "candidates must extend a prefix"
            pool = ring.candidates(key, min(n, reach))  # what the caller could offer
            below = [m for m in pool if load[m] < cap]
            if reach >= n:
                assert below, "c >= 1 and every member offered: one is always below the cap"
            if below:
                assert chosen == below[0]  # the first below the cap in preference order
                assert load[chosen] + 1 <= cap
            else:  # the fallback: every offered candidate at the cap → the least loaded
                assert chosen == min(pool, key=load.__getitem__)
            load[chosen] += 1
            in_flight.append(chosen)

    check()

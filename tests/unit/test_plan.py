"""``plan``: the leader's decisions as a table of observed states and the actions they call for.

Each row is one observed state written compactly: the stored membership (member names, target N,
epoch), the epoch this instance routes on, what the runtime runs, the runtime records, and the
DOWN members with the seconds since each went DOWN. ``plan`` is pure, so the table is the spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from balancer.control.plan import (
    Action,
    Adopt,
    Boot,
    Evict,
    Join,
    Observed,
    Policy,
    Restore,
    Spawn,
    StopStrays,
    next_wake,
    plan,
)
from balancer.runtimes.base import ReplicaHandle
from balancer.state.store import Membership, Replica

NOW = 100.0


@dataclass(frozen=True)
class Case:
    members: tuple[str, ...] = ()
    target: int | None = None
    epoch: int = 1
    known_epoch: int = 0
    running: tuple[str, ...] = ()
    records: tuple[str, ...] = ()
    down_for_s: dict[str, float] = field(default_factory=dict)
    boot: int = 3
    grace_s: float = 0.0
    discovered: bool = False  # ``running`` is what the runtime lists (DNS, say)

    def observed(self) -> Observed:
        stored = _membership(self.members, self.target, self.epoch)
        known = _membership(self.members, self.target, self.known_epoch)
        return Observed(
            stored,
            known,
            frozenset(self.running),
            {name: handle(name) for name in self.records},
            {name: NOW - s for name, s in self.down_for_s.items()},
            NOW,
            {name: handle(name) for name in self.running} if self.discovered else {},
        )

    def policy(self) -> Policy:
        return Policy(self.boot, self.grace_s, discovered=self.discovered)


def handle(name: str) -> ReplicaHandle:
    return ReplicaHandle(name, name, "127.0.0.1:1")


def _membership(names: tuple[str, ...], target: int | None, epoch: int) -> Membership:
    replicas = tuple(Replica(n, i + 1, "127.0.0.1:1") for i, n in enumerate(names))
    return Membership(epoch, replicas, target)


ABC = ("a", "b", "c")

CASES: dict[str, tuple[Case, list[Action]]] = {
    # -- steady state -----------------------------------------------------------------------
    "converged: nothing to do": (Case(ABC, 3, running=ABC, records=ABC), []),
    "a member with no record still running elsewhere is left to the health checks": (
        Case(ABC, 3, running=("a", "b")),
        [],
    ),
    # -- bootstrap --------------------------------------------------------------------------
    "first leader ever: boot N": (Case(epoch=0), [Boot(3)]),
    "boot uses the configured N": (Case(epoch=0, boot=5), [Boot(5)]),
    "a target of 0 set by /rm is not a first boot": (Case((), 0), []),
    "target set but never reached (boot failed): spawn what is owed": (
        Case((), 2),
        [Spawn(2)],
    ),
    "no boot while a predecessor's replicas wait to be adopted": (
        Case(epoch=0, records=("Server 1",)),
        [Adopt(handle("Server 1"))],
    ),
    "no boot while strays run (their names may be Server 1..N)": (
        Case(epoch=0, running=("Server 1",)),
        [StopStrays(("Server 1",))],
    ),
    # -- restore after the store lost its data ----------------------------------------------
    "store behind what we route on: restore it and nothing else": (
        Case(ABC, 3, epoch=0, known_epoch=7, running=ABC),
        [Restore(_membership(ABC, 3, 7))],
    ),
    "store ahead of us (another leader committed): no restore": (
        Case(ABC, 3, epoch=9, known_epoch=7, running=ABC, records=ABC),
        [],
    ),
    # -- adoption and strays ----------------------------------------------------------------
    "records the runtime does not track are adopted, in name order": (
        Case(ABC, 3, running=("a",), records=("c", "a", "b")),
        [Adopt(handle("b")), Adopt(handle("c"))],
    ),
    "a running non-member is a stray": (
        Case(ABC, 3, running=("a", "b", "c", "x"), records=ABC),
        [StopStrays(("x",))],
    ),
    "adoption and strays in one round; members still owed are spawned too": (
        Case(("a",), 2, running=("a", "z"), records=("a", "y")),
        [Adopt(handle("y")), StopStrays(("z",)), Spawn(1)],
    ),
    # -- failures ---------------------------------------------------------------------------
    "a DOWN member is evicted and replaced in the same round": (
        Case(ABC, 3, running=ABC, records=ABC, down_for_s={"b": 0.0}),
        [Evict("b", True), Spawn(1)],
    ),
    "several DOWN members: each evicted, replacements owed for all": (
        Case(ABC, 3, running=("a",), records=ABC, down_for_s={"c": 1.0, "b": 2.0}),
        [Adopt(handle("b")), Adopt(handle("c")), Evict("b", False), Evict("c", False), Spawn(2)],
    ),
    "DOWN but still running, within the grace: wait": (
        Case(ABC, 3, running=ABC, records=ABC, down_for_s={"b": 0.3}, grace_s=1.0),
        [],
    ),
    "DOWN and still running past the grace: evict": (
        Case(ABC, 3, running=ABC, records=ABC, down_for_s={"b": 1.0}, grace_s=1.0),
        [Evict("b", True), Spawn(1)],
    ),
    "DOWN and gone: no grace, evict at once": (
        Case(ABC, 3, running=("a", "c"), records=("a", "c"), down_for_s={"b": 0.1}, grace_s=9),
        [Evict("b", False), Spawn(1)],
    ),
    "a DOWN name that is no longer a member (removed by /rm) is left alone": (
        Case(("a", "c"), 2, running=("a", "c"), records=("a", "c"), down_for_s={"b": 5.0}),
        [],
    ),
    # -- target N ---------------------------------------------------------------------------
    "more members than N (a replacement raced /rm): nothing is removed": (
        Case(ABC, 2, running=ABC, records=ABC),
        [],
    ),
    "fewer members than N: one replacement per round, the count owed is said": (
        Case(("a",), 3, running=("a",), records=("a",)),
        [Spawn(2)],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_plan(name: str) -> None:
    case, expected = CASES[name]
    assert plan(case.policy(), case.observed()) == expected


def found(*names: str) -> Case:
    """Discovered replicas: ``names`` are what the runtime lists (members are set per row)."""
    return Case(running=names, discovered=True)


def with_members(case: Case, *members: str, **changes: Any) -> Case:
    return replace(case, members=members, **changes)


# With replicas another system runs, the runtime's list is the membership: join, evict, never
# boot/spawn/adopt/stop.
DISCOVERED: dict[str, tuple[Case, list[Action]]] = {
    "first leader, nothing stored: join what is listed (no boot)": (
        Case(epoch=0, running=ABC, discovered=True),
        [Join((handle("a"), handle("b"), handle("c")))],
    ),
    "nothing listed and nothing stored: nothing (no boot)": (Case(epoch=0, discovered=True), []),
    "converged": (with_members(found(*ABC), *ABC), []),
    "the answer grew: join the new ones only, in name order": (
        with_members(found("e", "a", "b", "c", "d"), *ABC),
        [Join((handle("d"), handle("e")))],
    ),
    "the answer shrank: evict those no longer listed, at once, nothing replaces them": (
        with_members(found("a"), *ABC, target=3),
        [Evict("b", False), Evict("c", False)],
    ),
    "3 → 2 of which one new: evict and join in one round": (
        with_members(found("a", "d"), *ABC),
        [Evict("b", False), Evict("c", False), Join((handle("d"),))],
    ),
    "an empty answer empties the ring": (
        with_members(found(), *ABC),
        [Evict("a", False), Evict("b", False), Evict("c", False)],
    ),
    "records and strays mean nothing here: no adoption, nothing stopped": (
        with_members(found(*ABC), "a", "b", "c", records=("x",)),
        [],
    ),
    "a DOWN listed member is evicted (health checks gate membership)": (
        with_members(found(*ABC), *ABC, down_for_s={"b": 0.0}),
        [Evict("b", True)],
    ),
    "a DOWN listed member within the grace: wait, do not re-join it": (
        with_members(found(*ABC), *ABC, down_for_s={"b": 0.3}, grace_s=1.0),
        [],
    ),
    "a DOWN listed member past the grace: evict": (
        with_members(found(*ABC), *ABC, down_for_s={"b": 1.0}, grace_s=1.0),
        [Evict("b", True)],
    ),
    "a DOWN member no longer listed: evicted once, as gone": (
        with_members(found("a", "c"), *ABC, down_for_s={"b": 0.1}, grace_s=9),
        [Evict("b", False)],
    ),
    "an evicted replica still listed and still held DOWN is not offered to join yet": (
        with_members(found(*ABC), "a", "c", down_for_s={"b": 5.0}),
        [],
    ),
    "once the health checks forget it, a listed non-member is offered again": (
        with_members(found(*ABC), "a", "c"),
        [Join((handle("b"),))],
    ),
    "store behind what we route on: restore first, as always": (
        with_members(found(*ABC), *ABC, epoch=0, known_epoch=7),
        [Restore(_membership(ABC, None, 7))],
    ),
}


@pytest.mark.parametrize("name", list(DISCOVERED))
def test_plan_of_discovered_replicas(name: str) -> None:
    case, expected = DISCOVERED[name]
    assert plan(case.policy(), case.observed()) == expected
    assert not [a for a in expected if isinstance(a, Boot | Spawn | Adopt | StopStrays)]


@pytest.mark.parametrize(
    ("case", "wake_at"),
    [
        (Case(ABC, 3, running=ABC), None),
        (Case(ABC, 3, running=ABC, down_for_s={"b": 0.3}, grace_s=1.0), NOW + 0.7),
        (Case(ABC, 3, running=ABC, down_for_s={"b": 0.3, "c": 0.6}, grace_s=1.0), NOW + 0.4),
        (Case(ABC, 3, running=("a", "c"), down_for_s={"b": 0.3}, grace_s=1.0), None),
        (Case(ABC, 3, running=ABC, down_for_s={"b": 3.0}, grace_s=1.0), None),
    ],
)
def test_next_wake_is_the_earliest_grace_deadline(case: Case, wake_at: float | None) -> None:
    got = next_wake(case.policy(), case.observed())
    assert got == (None if wake_at is None else pytest.approx(wake_at))


@pytest.mark.parametrize("name", list(CASES))
def test_applying_the_plans_converges_in_three_rounds(name: str) -> None:
    """Apply each round's adoptions, strays and restore to the observed state and plan again:
    within three rounds none is left, and no replica is adopted or stopped twice."""
    case, _ = CASES[name]
    seen = case.observed()
    adopted: list[str] = []
    stopped: list[str] = []
    for _ in range(3):
        actions = plan(case.policy(), seen)
        adopted += [a.handle.name for a in actions if isinstance(a, Adopt)]
        stopped += [n for a in actions if isinstance(a, StopStrays) for n in a.names]
        restored = any(isinstance(a, Restore) for a in actions)
        seen = Observed(
            seen.known if restored else seen.stored,
            seen.known,
            (seen.running | set(adopted)) - set(stopped),
            {n: h for n, h in seen.records.items() if n not in stopped},
            seen.down_since,
            seen.now,
        )
    assert not [a for a in plan(case.policy(), seen) if isinstance(a, Adopt | StopStrays | Restore)]
    assert len(adopted) == len(set(adopted)) and len(stopped) == len(set(stopped))

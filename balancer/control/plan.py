"""The leader's decisions, as a pure function of what it observed: ``plan``.

Owns ``Observed``, ``Policy``, the ``Action`` types and ``plan``/``next_wake``. The reconciler
(``balancer.control.reconciler``) observes the whole state each round (the stored membership, what
this instance routes on, what the runtime runs, the runtime records in the store, the health
checks' verdicts) and applies the actions ``plan`` returns; it decides nothing itself. So
bootstrap, adoption, stray removal, restore after the store lost its data and replacement of a
failed replica are cases of one function, tested by tables (``tests/unit/test_plan.py``), the way
``balancer.hashing`` is.

Order of concerns, each one blocking the next while it has work:
  1. the store is behind what this instance routes on (it lost its data): ``Restore`` it, nothing
     else this round (the document everything else reads is wrong);
  2. runtime records and members the runtime does not track: ``Adopt`` them;
  3. replicas the runtime runs that are not members: ``StopStrays``;
  4. no target N yet (no leader ever booted): ``Boot`` N; never next to adoptions or strays,
     whose names the initial ``Server 1..N`` could take;
  5. members the health checks hold DOWN: ``Evict`` each, unless its replica still runs and is
     within ``replace_after_s`` of going DOWN (it may rise again);
  6. fewer members than N: ``Spawn`` one replacement.

With replicas another system runs (``Policy.discovered``: the runtime lists what DNS, say,
resolves to; ``balancer.runtimes.discovery``) the runtime's list is the desired membership:
  1. ``Restore`` as above;
  2. members the runtime no longer lists: ``Evict`` each at once (their system removed them);
     members the health checks hold DOWN: ``Evict`` each, within ``replace_after_s`` as above;
  3. listed replicas that are not members, and that the health checks do not hold DOWN (an
     evicted one until the monitor forgets it): ``Join`` them (the manager lets in those that
     pass a health check).
It never boots, spawns, adopts or stops strays: this balancer starts and stops nothing.
Must not import: asyncio, aiohttp, redis, docker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from balancer.runtimes.base import ReplicaHandle
from balancer.state.store import Membership


@dataclass(frozen=True)
class Policy:
    """What the leader keeps, from the settings."""

    boot_replicas: int  # N started when no leader has set one yet
    replace_after_s: float = 0.0  # grace of a DOWN replica that still runs (0: none)
    discovered: bool = False  # the runtime's list is the membership (it cannot start replicas)


@dataclass(frozen=True)
class Observed:
    """One consistent look at everything a decision depends on."""

    stored: Membership  # the document in the store
    known: Membership  # the document this instance routes on (restores a store that lost it)
    running: frozenset[str]  # replicas the runtime tracks and that still run
    records: Mapping[str, ReplicaHandle]  # runtime records in the store, plus members' own
    down_since: Mapping[str, float] = field(default_factory=dict)  # DOWN members → when
    now: float = 0.0
    listed: Mapping[str, ReplicaHandle] = field(default_factory=dict)  # runtime's list (discovered)


@dataclass(frozen=True)
class Restore:
    membership: Membership


@dataclass(frozen=True)
class Adopt:
    handle: ReplicaHandle


@dataclass(frozen=True)
class StopStrays:
    names: tuple[str, ...]


@dataclass(frozen=True)
class Boot:
    count: int


@dataclass(frozen=True)
class Evict:
    name: str
    running: bool  # its replica still ran when it was evicted (it stayed DOWN past the grace)


@dataclass(frozen=True)
class Spawn:
    owed: int  # members missing from N; one is started per round


@dataclass(frozen=True)
class Join:
    handles: tuple[ReplicaHandle, ...]  # listed replicas to let in once they pass a check


Action = Restore | Adopt | StopStrays | Boot | Evict | Spawn | Join


def plan(policy: Policy, seen: Observed) -> list[Action]:
    """The actions that move the observed state toward the desired one (in order)."""
    if seen.stored.epoch < seen.known.epoch:
        return [Restore(seen.known)]
    if policy.discovered:
        return _discovered(policy, seen)
    adopt: list[Action] = [
        Adopt(handle) for name, handle in sorted(seen.records.items()) if name not in seen.running
    ]
    members = set(seen.stored.names)
    strays = tuple(sorted(seen.running - members))
    early: list[Action] = [*adopt, *([StopStrays(strays)] if strays else [])]
    if seen.stored.target is None and not seen.stored.replicas:
        return early or [Boot(policy.boot_replicas)]
    evict: list[Action] = [*_evictions(policy, seen)]
    owed = _owed(seen.stored) + len(evict)
    return early + evict + ([Spawn(owed)] if owed > 0 else [])


def next_wake(policy: Policy, seen: Observed) -> float | None:
    """When the earliest grace period of a DOWN replica ends (None: no deadline pending)."""
    deadlines = [
        since + policy.replace_after_s
        for name, since in seen.down_since.items()
        if _waiting(policy, seen, name)
    ]
    return min(deadlines, default=None)


def _evictions(policy: Policy, seen: Observed) -> list[Evict]:
    members = set(seen.stored.names)
    return [
        Evict(name, name in seen.running)
        for name in sorted(seen.down_since)
        if name in members and not _waiting(policy, seen, name)
    ]


def _discovered(policy: Policy, seen: Observed) -> list[Action]:
    """The plan when the runtime's list is the membership (see the module docstring)."""
    members = set(seen.stored.names)
    gone: list[Action] = [Evict(name, False) for name in sorted(members - set(seen.listed))]
    down = [e for e in _evictions(policy, seen) if e.name in seen.listed]
    # A name the health checks still hold DOWN (a member waiting out its grace, or one just
    # evicted, until the monitor forgets it) is not offered: it rejoins after a fresh check.
    joining = tuple(
        h for name, h in sorted(seen.listed.items()) if name not in members | set(seen.down_since)
    )
    return gone + down + ([Join(joining)] if joining else [])


def _waiting(policy: Policy, seen: Observed, name: str) -> bool:
    """A DOWN member whose replica still runs, within its grace period: it may rise again."""
    return name in seen.running and seen.now < seen.down_since[name] + policy.replace_after_s


def _owed(stored: Membership) -> int:
    if stored.target is None:
        return 0
    return max(0, stored.target - len(stored.replicas))

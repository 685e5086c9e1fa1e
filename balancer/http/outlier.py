"""Passive health: replicas that fail requests in a row are ejected from routing for a while.

Owns ``EjectionPolicy`` and ``OutlierDetector`` (Envoy's outlier detection, consecutive-failure
flavour). The data path reports each failed attempt (``failure``: connect errors, resets,
timeouts, invalid responses, and answers whose status is one of the policy's ``statuses``: every
5xx by default, like Envoy's ``consecutive_5xx`` and HAProxy's ``observe layer7``, so a replica
that passes its health checks but fails every request is ejected too) and each other complete
response (``success``). ``consecutive`` failures in a row eject a replica for
``base_s × times ejected``, at most ``max_s``; a success resets the count. The multiplier drops
by one for every ``max_s`` the replica then spends un-ejected, so a replica that fails once in a
long while is not punished for its old record. At most ``floor(max_share × members)`` replicas
are ejected at once (a failure beyond that is still counted, and ejects as soon as room is
made). Ejection is a routing preference, not a verdict: the data path skips an ejected replica
like one it already tried and still uses it when every candidate is ejected; removing and
replacing dead replicas remains the active health checker's job (``balancer.control.health``), whose
DOWN verdicts are held here too (``hold_down``) until the replica is UP again.
State is per balancer process and per ring member; ``retain`` forgets replicas that left.
Pure: time comes from the injected ``clock`` (seconds, monotonic), nothing is scheduled.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client, or other project modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

_HELD = float("inf")  # the end of an ejection held by the active health checks


@dataclass(frozen=True)
class EjectionPolicy:
    """When to eject and for how long (see the module docstring)."""

    consecutive: int = 5  # failures in a row that eject a replica; 0 = never eject
    base_s: float = 2.0  # the first ejection's length; the n-th lasts n × base_s
    max_s: float = 30.0  # no ejection lasts longer
    max_share: float = 0.5  # at most floor(max_share × members) replicas ejected at once
    # Statuses answered by a replica that count as failures (empty: none; the data path only
    # looks at 5xx answers, so the set is within 500..599).
    statuses: frozenset[int] = frozenset(range(500, 600))


class OutlierDetector:
    """Consecutive-failure ejection of one balancer process (see the module docstring).

    ``ejected`` (name → when its ejection ends) and ``failing`` (name → failures in a row) are
    read directly by the data path: both are empty while every replica is healthy, so a request
    pays one truth test for each. An entry of ``ejected`` whose end has passed is no longer in
    force (``is_ejected`` is False) and is removed by the next ``sweep``.
    """

    def __init__(self, policy: EjectionPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self.ejected: dict[str, float] = {}
        self.failing: dict[str, int] = {}
        self._members: frozenset[str] = frozenset()
        # name → (times ejected, when the last ejection ended), kept across ejections.
        self._history: dict[str, tuple[int, float]] = {}

    # -- reports from the data path --------------------------------------------------------

    def failure(self, name: str) -> float:
        """Count a failed attempt on ``name``.

        Returns:
            The length (seconds) of the ejection this failure started, else 0.0. Failures of a
            replica already ejected, or not a member, are not counted.
        """
        policy = self.policy
        if not policy.consecutive or name not in self._members:
            return 0.0
        now = self._clock()
        if self.ejected.get(name, 0.0) > now:
            return 0.0
        count = self.failing.get(name, 0) + 1
        self.failing[name] = count
        if count < policy.consecutive or not self._room(now):
            return 0.0
        return self._eject(name, now)

    def success(self, name: str) -> None:
        """A complete response from ``name``: its run of failures ends."""
        self.failing.pop(name, None)

    # -- queries ---------------------------------------------------------------------------

    def is_ejected(self, name: str) -> bool:
        until = self.ejected.get(name)
        return until is not None and until > self._clock()

    def ejected_now(self) -> list[str]:
        """Names whose ejection is in force, sorted."""
        now = self._clock()
        return sorted(name for name, until in self.ejected.items() if until > now)

    def times_ejected(self, name: str) -> int:
        """The multiplier of ``name``'s next ejection minus one (0: never ejected lately)."""
        return self._history.get(name, (0, 0.0))[0]

    # -- upkeep ----------------------------------------------------------------------------

    def sweep(self) -> list[str]:
        """Remove ejections that have ended; return those replicas' names."""
        if not self.ejected:
            return []
        now = self._clock()
        ended = [name for name, until in self.ejected.items() if until <= now]
        for name in ended:
            del self.ejected[name]
        return ended

    def retain(self, members: Iterable[str]) -> list[str]:
        """The ring's members (those that own keys): forget every other replica. Returns the
        names whose ejection was dropped that way."""
        self._members = frozenset(members)
        dropped = [n for n in self.ejected if n not in self._members]
        for table in (self.ejected, self.failing, self._history):
            for name in [n for n in table if n not in self._members]:
                del table[name]
        return dropped

    def hold_down(self, down: Iterable[str]) -> list[str]:
        """Keep the replicas active health checks report DOWN out of routing (``ejected`` until
        further notice), within the same ``max_share``; release the ones no longer DOWN.

        Returns:
            The names released (their ejection ended here).
        """
        now = self._clock()
        wanted = {n for n in down if n in self._members}
        released = [n for n, until in self.ejected.items() if until == _HELD and n not in wanted]
        for name in released:
            del self.ejected[name]
        for name in sorted(wanted):
            if self.ejected.get(name) != _HELD and self._room(now):
                self.ejected[name] = _HELD
        return released

    # -- internals -------------------------------------------------------------------------

    def _room(self, now: float) -> bool:
        """Whether one more replica may be ejected under ``max_share``."""
        in_force = sum(1 for until in self.ejected.values() if until > now)
        # 1e-9: 0.29 × 100 is 28.999999999999996 in floating point, and means 29.
        return in_force + 1 <= int(self.policy.max_share * len(self._members) + 1e-9)

    def _eject(self, name: str, now: float) -> float:
        policy = self.policy
        times, ended_at = self._history.get(name, (0, 0.0))
        if times:  # un-ejected since ended_at: one step of forgiveness per max_s
            times = max(0, times - int((now - ended_at) // policy.max_s))
        times += 1
        length = min(policy.base_s * times, policy.max_s)
        self.ejected[name] = now + length
        self._history[name] = (times, now + length)
        self.failing.pop(name, None)
        return length

"""One walk over a key's candidates: the first one the caller accepts.

Owns ``Picker``, built once per ring (each routing snapshot holds one). ``pick(key, accept)``
offers the key's candidates to ``accept`` once each, in the ring's preference order, owner
first (exactly what ``Ring.candidates(key, len(members))`` lists), and returns the first one
it takes (Pingora's ``select_with(key, max_iterations, accept)``, Envoy's
``chooseHost`` with its retry host predicate). Why a candidate is turned down (ejected, held
down by the health checks, at its bounded-load cap, already tried by this request) is the
caller's business: the picker knows the ring only, and what the caller falls back to when every
candidate is turned down is the caller's too (``accept`` may remember what it saw).
The ring is asked for 2, 4, 8, … candidates (each answer a prefix of the next: the ring's
preference order), so a walk that stops at the second candidate never ranks the rest.
Pure: nothing is kept between calls.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client, or modules outside
``balancer.hashing``.
"""

from __future__ import annotations

from collections.abc import Callable

from balancer.hashing.base import Ring


class Picker:
    """The candidate walk of one immutable ring (see the module docstring)."""

    __slots__ = ("ring", "size")

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.size = len(ring.members)  # members that own keys: the most a walk can yield

    def pick(self, key: str, accept: Callable[[str], bool]) -> str | None:
        """The first of ``key``'s candidates ``accept`` takes, else None.

        Args:
            key: the request key.
            accept: called once per candidate, owner first, in the ring's preference order,
                until it returns True.

        Returns:
            The candidate accepted; None when ``accept`` turned every candidate down or the ring
            is empty.
        """
        # A loop rather than a generator: a walk that stops early would leave a generator to
        # close, which costs more than the walk (it raises GeneratorExit inside it).
        ring = self.ring
        size = self.size
        seen = 0
        want = 2
        while seen < size:
            count = want if want < size else size
            offered = ring.candidates(key, count)
            for name in offered[seen:] if seen else offered:  # a prefix was offered already
                if accept(name):
                    return name
            if len(offered) < count:  # the ring has no more candidates for this key
                return None
            seen = count
            want *= 2
        return None

    def candidates(self, key: str) -> list[str]:
        """Every candidate of ``key``, owner first: what ``pick`` offers when ``accept`` takes
        none (for tests and diagnostics; the data path walks with ``pick``)."""
        walked: list[str] = []

        def none(name: str) -> bool:
            walked.append(name)
            return False

        self.pick(key, none)
        return walked

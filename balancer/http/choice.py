"""Where each attempt of a request goes: one walk over the key's candidates per attempt.

Owns the data path's acceptance tests over the snapshot's picker (``balancer.hashing.picker``):
``first_choice`` for a request's first attempt, ``next_candidate`` for a retry; the retry policy
(``retry_allowed``, and ``Retries``: a request's retry bookkeeping and budgets); and the reports
to outlier detection. ``balancer.http.exchange`` does the I/O and asks here only when something
may turn the key's owner down, or when an attempt failed.

First attempt: the key's owner. An owner that outlier detection ejected or the active health
checks hold down (``balancer.http.outlier``) is skipped like a replica already tried, for the
key's first candidate in routing (the owner after all when every candidate is out: ejection
alone never fails a request). With a balance factor (bounded loads, ``balancer.hashing.bounded``)
a replica at its load cap is turned down too, and the request goes to the key's first candidate
in routing below the cap, else (every one is at the cap) to the least loaded of them, the
earliest on a tie; leaving the first candidate in routing that way counts one spill on it. A
replica's load is its requests in flight plus those waiting for a new connection to it, counted
per replica and in total in ``TrafficStats``.

Retries (HAProxy's ``retry-on``, Envoy's retry policy and budget). A failed attempt goes again
at most ``retries`` times, when the failure is one ``--retry-on`` names: ``connect`` (refused,
unreachable, connect timeout), ``reset`` (the connection closed before any response byte reached
the client), ``5xx`` (any 500-599) or ``gateway-error`` (502/503/504) answered by the replica
while nothing was relayed yet: that answer is dropped, and relayed after all when no retry
follows (Envoy's ``5xx`` and ``gateway-error``). Timeouts and invalid responses are answered
(504, 502), not retried: the replica may have acted on them. A connect failure means no byte of
the request left the balancer, so sending it elsewhere is safe for every method, POST included.
Once bytes of it reached a replica, only ``--retry-methods`` (idempotent GET, HEAD, OPTIONS by
default) go again, and only while the whole request is kept for a replay (``replay_limit``)
(``retry_allowed``). A retry goes to the key's first candidate this request has not tried and
that is in routing, else to the first one not tried (only ejected ones are left), else nowhere.
Two budgets bound retries (``Retries``): no new attempt ``retry_timeout_s`` after the request's
start, and retries in flight in this process (requests on a retry attempt) stay at most
``max(min_concurrency, retry_budget × requests in flight)`` (Envoy's retry budget): past it, the
failure is answered and counted in ``TrafficStats.retry_budget_exhausted``. The retry budget
guards against retry storms on overloaded replicas, so it applies to retries of answers an
overloaded replica gives (5xx). A retry after a refused connection or a reset before any
response byte is bounded by ``retries``, the time budget and outlier ejection alone: the first
added no load anywhere, and the second is what every request in flight on a replica that dies
gets at once (a replica killed under load must not turn concurrent requests for its keys into
errors).

Passive health feeds these choices: every failed attempt on a replica (connect, reset, timeout,
invalid response, and the statuses ejection counts, every 5xx by default) is reported to outlier
detection (``report_failure``); a complete response reports a success (``report_answer``).
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from balancer.hashing.bounded import load_cap
from balancer.hashing.picker import Picker
from balancer.http.outlier import OutlierDetector
from balancer.http.stats import ReplicaStats, TrafficStats

if TYPE_CHECKING:
    from balancer.http.frontend import Frontend

log = logging.getLogger(__name__)


def first_choice(
    picker: Picker,
    key: str,
    owner: str,
    outlier: OutlierDetector,
    stats: TrafficStats,
    factor: float,
) -> str:
    """The replica a request's first attempt goes to (see the module docstring).

    Args:
        picker: the snapshot's picker; ``owner`` is its ring's owner of ``key``.
        outlier: this process's outlier detector (which replicas are ejected or held down).
        stats: this process's traffic counters (loads; a spill is counted there).
        factor: the balance factor, 0 when bounded loads are off.
    """
    # ``name in ejected`` first: most names are not, and that test costs no call.
    ejected = outlier.ejected
    in_routing = owner not in ejected or not outlier.is_ejected(owner)
    if not factor:  # ejection alone: the owner, else the first candidate in routing
        return owner if in_routing else _in_routing(picker, key, owner, outlier)
    replicas = stats.replicas
    cap = load_cap(factor, stats.load, picker.size)
    if in_routing and _load(replicas, owner) < cap:  # the common case, without a walk
        return owner
    return _below_cap(picker, key, owner, outlier, replicas, cap)


def _in_routing(picker: Picker, key: str, owner: str, outlier: OutlierDetector) -> str:
    """The key's first candidate in routing, else (every one is out) ``owner``, which is out.

    Not inside ``first_choice``: a closure's cells are made at every call of the function that
    holds them, and most calls of ``first_choice`` need no walk."""
    ejected = outlier.ejected

    def routed(name: str) -> bool:
        return name != owner and (name not in ejected or not outlier.is_ejected(name))

    return picker.pick(key, routed) or owner


def _below_cap(
    picker: Picker,
    key: str,
    owner: str,
    outlier: OutlierDetector,
    replicas: Mapping[str, ReplicaStats],
    cap: int,
) -> str:
    """The key's first candidate in routing below ``cap``, else the least loaded one in routing
    (the earliest on a tie), else (none is in routing) ``owner``. Leaving the first candidate in
    routing counts a spill on it."""
    ejected = outlier.ejected
    first: str | None = None
    best = owner
    best_load = 0

    def below(name: str) -> bool:  # remembers the first and the least loaded turned down
        nonlocal first, best, best_load
        if name in ejected and outlier.is_ejected(name):
            return False
        load = _load(replicas, name)
        if load < cap:
            return True
        if first is None:
            first = best = name
            best_load = load
        elif load < best_load:
            best, best_load = name, load
        return False

    chosen = picker.pick(key, below) or best
    if first is not None and chosen != first:
        replicas[first].spills += 1
    return chosen


def _load(replicas: Mapping[str, ReplicaStats], name: str) -> int:
    st = replicas.get(name)
    return 0 if st is None else st.in_flight + st.connecting


def next_candidate(
    picker: Picker, key: str, tried: Collection[str], outlier: OutlierDetector
) -> str | None:
    """The key's first candidate not in ``tried`` and in routing, else the first one not in
    ``tried``, else None."""
    ejected = outlier.ejected
    skipped: list[str] = []

    def untried(name: str) -> bool:
        if name in tried:
            return False
        if name in ejected and outlier.is_ejected(name):
            skipped.append(name)
            return False
        return True

    chosen = picker.pick(key, untried)
    return chosen if chosen is not None or not skipped else skipped[0]


def retry_allowed(fe: Frontend, method: bytes, *, sent: bool, replay: bool, attempts: int) -> bool:
    """Whether a failed attempt may go again (see the module docstring).

    Args:
        method: the request's method; ``attempts``: the retries it had so far.
        sent: bytes of the request reached the failed replica.
        replay: the whole request is still kept for a replay.
    """
    if attempts >= fe.retries:
        return False
    return not sent or (method in fe.retry_methods and replay)


class Retries:
    """One request's retries, made at its first failed attempt that may go again: the replicas
    it tried, in order, and whether it holds one of the retry budget's slots (while it is on a
    retry attempt)."""

    __slots__ = ("fe", "holding", "key", "tried")

    def __init__(self, fe: Frontend, key: str, first: str) -> None:
        self.fe = fe
        self.key = key
        self.tried = [first]
        self.holding = False

    def target(self, start: float, *, answered: bool) -> str | None:
        """The replica the next retry goes to, or None: no candidate is left, or a budget is
        spent.

        Args:
            start: when the request started (the retry time budget counts from it).
            answered: the failed attempt was an answer (a 5xx), so the retry budget applies; a
                retry refused for it is counted.
        """
        fe = self.fe
        name = next_candidate(fe.view.current.picker, self.key, self.tried, fe.outlier)
        if name is None or fe.loop.time() - start >= fe.retry_timeout_s:
            return None
        # Envoy's retry budget (this request counts among those in flight): after this retry,
        # retries in flight are at most max(min_concurrency, floor(budget × in flight)).
        stats = fe.stats
        if answered and stats.retries_in_flight >= max(
            fe.retry_min_concurrency, int(fe.retry_budget * (stats.load + 1))
        ):
            stats.retry_budget_exhausted += 1
            return None
        return name

    def begin(self, name: str) -> None:
        """A retry attempt on ``name`` starts: it holds a budget slot until ``release``."""
        stats = self.fe.stats
        self.holding = True
        stats.retries_in_flight += 1
        if stats.retries_in_flight > stats.retries_in_flight_peak:
            stats.retries_in_flight_peak = stats.retries_in_flight
        self.tried.append(name)

    def release(self) -> None:
        """The retry attempt is over (failed, answered or abandoned): free its budget slot."""
        if self.holding:
            self.holding = False
            self.fe.stats.retries_in_flight -= 1


def report_failure(fe: Frontend, name: str, st: ReplicaStats) -> None:
    """Report a failed attempt on ``name`` (``st``: its counters) to outlier detection."""
    ejected_for_s = fe.outlier.failure(name)
    if ejected_for_s:
        st.ejections += 1
        st.ejected = 1
        log.warning(
            "replica %s ejected for %.1fs after %d failures in a row",
            name,
            ejected_for_s,
            fe.outlier.policy.consecutive,
        )


def report_answer(fe: Frontend, name: str, status: int) -> None:
    """A complete response from ``name``: a success for outlier detection, unless its status
    counts as a failure."""
    if status not in fe.eject_statuses:
        fe.outlier.success(name)

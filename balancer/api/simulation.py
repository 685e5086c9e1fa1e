"""What ``GET /lb/simulate`` may cost, and how its answers are shared.

Owns ``measure`` (the share of keys a change would move, at a bounded cost per algorithm),
``simulation_cost_error`` (the inputs too costly to simulate, refused before any work) and
``SimulationGate`` (a bounded LRU of answers, one computation per distinct question, one at a
time, at most ``cpu_share`` of the time).

Why the gate: the endpoint is an unauthenticated read served by the process that runs the data
path. A computation off the event loop still holds the GIL; while one runs, the loop gets the
interpreter back only every switch interval (5 ms), so proxied requests crawl. Answers are
therefore cached per (ring, question); a question already being computed is awaited, not
recomputed; and a new computation starts only after the previous one's cost times
``1 / cpu_share - 1`` has passed (the cost is the computing thread's CPU time), so simulations
take at most that share of the process however many clients loop on them. A caller waits at
most ``wait_s`` for its turn, then gets ``Busy`` (the handler answers 503 with ``Retry-After``).

Costs per algorithm at 64 replicas (one core, no other load): ``rendezvous`` is closed-form
(``balancer.hashing.hrw_movement``, under a millisecond; sampling keys took 30 ms per member);
``ring`` compares both rings' points exactly (about 2 µs a point, at most
``MAX_SIMULATED_POINTS``); ``assignment`` builds the table (bounded like
``admin_input.ring_cost_error``, but tighter) and samples ``ASSIGNMENT_SAMPLES`` keys;
``slots`` rebalances the 65,536-slot table (about 45 ms) and ``maglev`` fills its 65,537-slot
table (about 100 ms): the cost of every ring change, bounded by the table sizes, not the inputs.
Must not import: aiohttp, redis, docker.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from balancer.hashing import Member, RingSettings, build_ring, next_state
from balancer.hashing.hrw_movement import expected_moved_share
from balancer.hashing.movement import moved_share
from balancer.state.view import Snapshot

CACHE_SIZE = 64
CPU_SHARE = 0.1  # of the process's time, at most, spent computing simulations
WAIT_S = 2.0  # the longest a request waits for its turn before it is told to retry
MAX_SIMULATED_POINTS = 1 << 15  # algorithm=ring: the points of both rings together
MAX_SIMULATED_SLOTS = 1 << 16  # algorithm=assignment: M ...
MAX_SIMULATED_PLACEMENTS = 1 << 13  # ... vnodes × replicas ...
MAX_SIMULATED_PROBE_WORK = 1 << 19  # ... and, above half the slots, × slots (a full table)
ASSIGNMENT_SAMPLES = 8_192  # keys compared: a standard error under 0.6 percentage points

Clock = Callable[[], float]
V = TypeVar("V")


def simulation_cost_error(
    settings: RingSettings, before: Sequence[Member], after: Sequence[Member]
) -> str | None:
    """Why simulating ``before`` → ``after`` under ``settings`` would cost too much, or None."""
    live_after = [m for m in after if m.weight > 0]
    if settings.algorithm == "ring":
        weight = sum(m.weight for m in before if m.weight > 0) + sum(m.weight for m in live_after)
        points = settings.points_per_weight * weight
        if points > MAX_SIMULATED_POINTS:
            return (
                f"the rings before and after would have {points} points together; a "
                f"simulation compares at most {MAX_SIMULATED_POINTS}"
            )
    if settings.algorithm == "assignment":
        slots, placements = settings.slots, settings.vnodes * len(live_after)
        if (
            slots > MAX_SIMULATED_SLOTS
            or placements > MAX_SIMULATED_PLACEMENTS
            or (placements > slots // 2 and placements * slots > MAX_SIMULATED_PROBE_WORK)
        ):
            return (
                f"{placements} virtual servers in {slots} slots; a simulation places at most "
                f"{MAX_SIMULATED_PLACEMENTS} in at most {MAX_SIMULATED_SLOTS} slots, and at "
                "most half the slots unless the table is small"
            )
    return None


def measure(snapshot: Snapshot, after: Sequence[Member]) -> tuple[int, float]:
    """(live replicas after, share of keys moved) for the change from ``snapshot`` to ``after``.

    Pure and synchronous: run it through ``SimulationGate``. Call ``simulation_cost_error``
    first: this function does what it is asked.
    """
    settings = snapshot.settings
    before = snapshot.membership.members()
    if settings.algorithm == "rendezvous":
        return sum(m.weight > 0 for m in after), expected_moved_share(before, after)
    state = next_state(before, snapshot.membership.ring_state, after, settings)
    new_ring = build_ring(after, settings, state)
    sample = ASSIGNMENT_SAMPLES if settings.algorithm == "assignment" else 0
    if sample:
        return len(new_ring.members), moved_share(snapshot.ring, new_ring, sample=sample)
    return len(new_ring.members), moved_share(snapshot.ring, new_ring)


@dataclass(frozen=True)
class Busy:
    """No turn within the wait: ask again after ``retry_after_s`` seconds."""

    retry_after_s: int


class SimulationGate(Generic[V]):
    """Cached, single-flight, one-at-a-time computations (see the module docstring)."""

    def __init__(
        self,
        *,
        cache_size: int = CACHE_SIZE,
        cpu_share: float = CPU_SHARE,
        wait_s: float = WAIT_S,
        clock: Clock = time.monotonic,
        cpu_clock: Clock = time.thread_time,
    ) -> None:
        """Args:
        clock: for the waits; cpu_clock: the CPU time of the thread it is called in, which
        is what a computation costs (its wall time also counts the GIL waits it suffers
        while the data path is busy).
        """
        if not 0 < cpu_share <= 1:
            raise ValueError("cpu_share must be in (0, 1]")
        self._cache: collections.OrderedDict[Hashable, V] = collections.OrderedDict()
        self._cache_size = cache_size
        self._cooldown_per_s = 1 / cpu_share - 1
        self._wait_s = wait_s
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._pending: dict[Hashable, asyncio.Future[V | Busy]] = {}
        self._turn = asyncio.Lock()  # held from a computation's turn until its thread ends
        self._ready_at = 0.0  # no computation starts before this (the previous one's cooldown)
        self._job: asyncio.Future[tuple[V, float]] | None = None  # the computation running, if any
        self.computed = 0  # computations started (for tests and curiosity)

    async def get(self, key: Hashable, compute: Callable[[], V]) -> V | Busy:
        """The answer for ``key``: cached, or shared with a caller computing it, or computed
        by ``compute`` (in a thread) when its turn comes within the wait."""
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        pending = self._pending.get(key)
        if pending is not None:
            return await self._follow(pending)
        future: asyncio.Future[V | Busy] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        result: V | Busy = Busy(self._retry_after_s())
        try:
            result = await self._lead(key, compute)
            return result
        finally:
            del self._pending[key]
            future.set_result(result)

    async def _follow(self, pending: asyncio.Future[V | Busy]) -> V | Busy:
        try:
            async with asyncio.timeout(self._wait_s):
                return await asyncio.shield(pending)  # our timeout must not cancel the leader's
        except TimeoutError:
            return Busy(self._retry_after_s())

    async def _lead(self, key: Hashable, compute: Callable[[], V]) -> V | Busy:
        deadline = self._clock() + self._wait_s
        try:
            async with asyncio.timeout(self._wait_s):
                await self._turn.acquire()
        except TimeoutError:
            return Busy(self._retry_after_s())
        try:
            delay = self._ready_at - self._clock()
            if delay > deadline - self._clock():
                self._turn.release()
                return Busy(self._retry_after_s())
            if delay > 0:
                await asyncio.sleep(delay)
        except BaseException:
            self._turn.release()
            raise
        value = await self._start(compute)
        self._cache[key] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return value

    async def _start(self, compute: Callable[[], V]) -> V:
        """Run ``compute`` in a thread; the turn is released when the thread ends, even if the
        caller is cancelled first (a thread cannot be stopped, so its CPU is still spent)."""
        self.computed += 1
        job = asyncio.ensure_future(asyncio.to_thread(self._timed, compute))
        self._job = job  # the reference to the running task

        def finished(done: asyncio.Future[tuple[V, float]]) -> None:
            cost_s = 0.0
            if not done.cancelled() and done.exception() is None:  # else raised by the await
                cost_s = done.result()[1]
            self._ready_at = self._clock() + cost_s * self._cooldown_per_s
            self._job = None
            self._turn.release()

        job.add_done_callback(finished)
        value, _cost_s = await asyncio.shield(job)
        return value

    def _timed(self, compute: Callable[[], V]) -> tuple[V, float]:
        """``compute()`` and the CPU seconds it took (in the gate's worker thread)."""
        started = self._cpu_clock()
        value = compute()
        return value, self._cpu_clock() - started

    def _retry_after_s(self) -> int:
        return max(1, math.ceil(self._ready_at - self._clock()))

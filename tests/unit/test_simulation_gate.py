"""SimulationGate: cached, single-flight, one computation at a time, a bounded CPU share."""

from __future__ import annotations

import asyncio
import threading
import time

from balancer.api.simulation import Busy, SimulationGate


class Work:
    """A computation that records how often it ran and how many ran at once."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        return "answer"


async def test_concurrent_identical_questions_compute_once_then_hit_the_cache() -> None:
    gate: SimulationGate[str] = SimulationGate()
    work = Work(0.05)
    answers = await asyncio.gather(*(gate.get("q", work) for _ in range(10)))
    assert answers == ["answer"] * 10
    assert await gate.get("q", work) == "answer"
    assert work.calls == 1 == gate.computed


async def test_one_computation_at_a_time_and_the_cache_is_bounded() -> None:
    gate: SimulationGate[str] = SimulationGate(cache_size=3, cpu_share=1.0)
    work = Work(0.01)
    await asyncio.gather(*(gate.get(i, work) for i in range(6)))
    assert work.calls == 6 and work.most_at_once == 1
    await gate.get(5, work)  # among the 3 kept
    assert work.calls == 6
    await gate.get(0, work)  # evicted: computed again
    assert work.calls == 7


async def test_a_caller_that_gets_no_turn_in_time_is_told_when_to_retry() -> None:
    # 20 ms of CPU at a 1% share: the next computation waits ~2 s, beyond the 0.1 s wait.
    ticks = iter([0.0, 0.02])
    gate: SimulationGate[str] = SimulationGate(
        cpu_share=0.01, wait_s=0.1, cpu_clock=lambda: next(ticks)
    )
    work = Work()
    assert await gate.get("a", work) == "answer"
    started = time.monotonic()
    busy = await gate.get("b", work)
    assert isinstance(busy, Busy) and busy.retry_after_s == 2
    assert time.monotonic() - started < 0.1  # no point waiting for what cannot come in time
    assert work.calls == 1
    assert await gate.get("a", work) == "answer"  # the cache still answers at once


async def test_followers_of_a_slow_computation_wait_a_bounded_time() -> None:
    gate: SimulationGate[str] = SimulationGate(wait_s=0.05)
    work = Work(0.3)
    leader = asyncio.ensure_future(gate.get("q", work))
    await asyncio.sleep(0.01)
    assert isinstance(await gate.get("q", work), Busy)
    assert await leader == "answer"
    assert work.calls == 1


async def test_a_cancelled_caller_keeps_the_turn_until_its_thread_ends() -> None:
    gate: SimulationGate[str] = SimulationGate(cpu_share=1.0)
    work = Work(0.2)
    first = asyncio.ensure_future(gate.get("a", work))
    await asyncio.sleep(0.05)
    first.cancel()
    second = await gate.get("b", work)
    assert second == "answer" and work.most_at_once == 1

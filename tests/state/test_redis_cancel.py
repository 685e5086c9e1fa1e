"""A task cancelled in the middle of redis-py calls ends (``balancer.state.redis_cancel``).

Without the fix, on Python 3.11 a task looping on ``SET`` over a client with a socket timeout
ignored 13 of 20 cancels against a real redis-server (``asyncio.wait_for`` returning the send's
result to a cancelled task): the loop ran on, and a service stopping it would wait forever.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
import redis.asyncio as redis

from balancer.state.redis_cancel import wait_for
from balancer.state.redis_store import redis_client
from tests.support.shared_redis import shared_redis

TRIES = 30


async def _loop_on_set(client: redis.Redis, key: str, stop: asyncio.Event) -> None:
    while not stop.is_set():  # the test's own way out when a cancel is lost
        await client.set(key, "v")


async def _lost_cancels(client: redis.Redis, key: str) -> int:
    """Cancel a task looping on SET ``TRIES`` times; how many cancels it ignored."""
    lost = 0
    for _ in range(TRIES):
        stop = asyncio.Event()
        task = asyncio.create_task(_loop_on_set(client, key, stop))
        await asyncio.sleep(0.01)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=1.0)
        if not done:
            lost += 1
            stop.set()
            await asyncio.wait([task], timeout=2.0)
    return lost


async def test_a_task_looping_on_redis_calls_ends_when_cancelled(redis_url: str | None) -> None:
    """Over a real redis-server (fakeredis loses cancellations in its own transport too)."""
    async with shared_redis("redis", redis_url) as shared:
        assert redis_url is not None
        client = redis_client(redis_url, timeout_s=1.0)  # keeps cancellations
        try:
            assert await _lost_cancels(client, f"{shared.prefix}k") == 0
        finally:
            await client.aclose()


async def test_wait_for_still_times_out_and_returns_results() -> None:
    assert await wait_for(asyncio.sleep(0, "done"), 1.0) == "done"
    with pytest.raises(TimeoutError):
        await wait_for(asyncio.sleep(5), 0.05)


async def test_a_cancel_as_the_awaited_call_completes_is_kept() -> None:
    """The race itself: the awaited future completes and the task is cancelled in one loop
    iteration. 3.11's ``asyncio.wait_for`` returns the result; ours raises."""

    async def waiter(fut: asyncio.Future[str]) -> str:
        return await wait_for(fut, 10.0)

    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()
    task = asyncio.create_task(waiter(fut))
    await asyncio.sleep(0)  # the task waits on fut
    fut.set_result("sent")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if sys.version_info < (3, 12):  # the defect this module works around is still there
        task = asyncio.create_task(asyncio.wait_for(fut2 := loop.create_future(), 10.0))
        await asyncio.sleep(0)
        fut2.set_result("sent")
        task.cancel()
        assert await task == "sent"

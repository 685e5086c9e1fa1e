"""``ProcessRuntime.adopt``: a second runtime (the next leader) takes over a replica process that
another runtime started, by pid and start time (its handle's locator), and can list and stop it.

Real ``python -m server`` children. Every process a test starts is stopped by the runtime that
started it (which also reaps it), whatever the outcome.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from balancer.control.health import probe, wait_ready
from balancer.runtimes.base import ReplicaHandle
from balancer.runtimes.process import ProcessRuntime, process_locator

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/stat"), reason="adoption checks the start time in /proc"
)

# Ignores SIGTERM (and says so through /proc), like a replica that will not stop gracefully.
STUBBORN = (
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
)


def state(pid: int) -> str | None:
    """The process state letter (R, S, Z…), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


def start_time(pid: int) -> str:
    """The process start time in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[19]


def pid_of(handle: ReplicaHandle) -> int:
    """The pid the process runtime describes (tests do not read the locator themselves)."""
    pid = ProcessRuntime().describe(handle)["pid"]
    assert isinstance(pid, int)
    return pid


def running(pid: int) -> bool:
    return state(pid) not in (None, "Z", "X")


def ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith("SigIgn:"))
    return bool(int(line.split()[1], 16) & (1 << 14))  # bit 15 - 1: SIGTERM


@pytest.fixture
async def starter() -> AsyncIterator[ProcessRuntime]:
    """The runtime of the leader that started the replicas (its children: it reaps them)."""
    runtime = ProcessRuntime(stop_grace_s=2.0)
    yield runtime
    await runtime.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def spawn_ready(
    runtime: ProcessRuntime, session: aiohttp.ClientSession, name: str
) -> ReplicaHandle:
    handle = await runtime.spawn(name, name.removeprefix("Server "))
    await wait_ready(session, handle.address, 15.0)
    return handle


async def test_a_second_runtime_adopts_lists_and_stops_a_replica(
    starter: ProcessRuntime, session: aiohttp.ClientSession
) -> None:
    handle = await spawn_ready(starter, session, "Server 1")
    assert handle.locator == process_locator(pid_of(handle), start_time(pid_of(handle)))
    heir = ProcessRuntime(stop_grace_s=2.0)
    try:
        assert await heir.adopt(handle) is True
        assert await heir.list() == [handle]
        assert await heir.adopt(handle) is True  # already tracked: still True
        assert await heir.list() == [handle]
        assert await probe(session, handle.address, 2.0)  # adoption left it serving
        started = time.monotonic()
        await heir.stop(handle.name)
        assert time.monotonic() - started < 2.0  # SIGTERM sufficed, no kill deadline waited
        assert not running(pid_of(handle))
        assert await heir.list() == []
        assert not await probe(session, handle.address, 0.5)
        await heir.stop(handle.name)  # no longer tracked: ignored
    finally:
        await heir.close()


async def test_a_handle_with_another_start_time_is_not_adopted(
    starter: ProcessRuntime, session: aiohttp.ClientSession
) -> None:
    """The pid is running, but it is not the process recorded (the pid was recycled)."""
    handle = await spawn_ready(starter, session, "Server 2")
    pid = pid_of(handle)
    recycled = replace(handle, locator=process_locator(pid, str(int(start_time(pid)) + 1)))
    heir = ProcessRuntime(stop_grace_s=2.0)
    try:
        assert await heir.adopt(recycled) is False
        assert await heir.list() == []
        await heir.close()  # must not touch a process it did not adopt
        assert running(pid)
        assert await probe(session, handle.address, 2.0)
    finally:
        await heir.close()


async def test_a_dead_pid_is_not_adopted(
    starter: ProcessRuntime, session: aiohttp.ClientSession
) -> None:
    handle = await spawn_ready(starter, session, "Server 3")
    pid = pid_of(handle)
    await starter.stop(handle.name)  # gone (and reaped) before the next leader looks
    assert state(pid) is None
    heir = ProcessRuntime()
    try:
        assert await heir.adopt(handle) is False
        no_start_time = replace(handle, locator=process_locator(pid, ""))
        assert await heir.adopt(no_start_time) is False  # no start time to compare
        assert await heir.adopt(replace(handle, locator="")) is False  # no locator at all
        assert await heir.list() == []
    finally:
        await heir.close()


async def test_an_adopted_replica_that_dies_drops_out_of_the_list(
    starter: ProcessRuntime, session: aiohttp.ClientSession
) -> None:
    handle = await spawn_ready(starter, session, "Server 4")
    heir = ProcessRuntime()
    try:
        assert await heir.adopt(handle) is True
        await starter.stop(handle.name, force=True)  # it crashes behind the heir's back
        assert await heir.list() == []
        assert await heir.adopt(handle) is False  # tracked, but no longer running
        await asyncio.wait_for(heir.stop(handle.name), 2.0)  # nothing left to signal
    finally:
        await heir.close()


async def test_release_leaves_an_adopted_replica_running(
    starter: ProcessRuntime, session: aiohttp.ClientSession
) -> None:
    handle = await spawn_ready(starter, session, "Server 5")
    heir = ProcessRuntime()
    assert await heir.adopt(handle) is True
    await heir.release()
    assert await heir.list() == []
    await heir.close()  # nothing tracked: stops nothing
    assert running(pid_of(handle))
    # Yet another leader can still adopt and stop it.
    third = ProcessRuntime()
    try:
        assert await third.adopt(handle) is True
        await third.stop(handle.name, force=True)
        assert not running(pid_of(handle))
    finally:
        await third.close()


async def test_stopping_an_adopted_replica_that_ignores_sigterm_kills_it() -> None:
    starter = ProcessRuntime(command=STUBBORN, stop_grace_s=2.0)
    try:
        handle = await starter.spawn("stubborn", "stubborn")
        pid = pid_of(handle)
        deadline = time.monotonic() + 10
        while not ignores_sigterm(pid):
            assert time.monotonic() < deadline, "the child never installed its SIGTERM handler"
            await asyncio.sleep(0.02)
        heir = ProcessRuntime(stop_grace_s=0.3)
        try:
            assert await heir.adopt(handle) is True
            started = time.monotonic()
            await asyncio.wait_for(heir.stop(handle.name), 5.0)
            took = time.monotonic() - started
            assert not running(pid)
            assert 0.25 <= took < 2.0, f"stop took {took:.2f}s"  # the grace, then SIGKILL
        finally:
            await heir.close()
    finally:
        await starter.close()

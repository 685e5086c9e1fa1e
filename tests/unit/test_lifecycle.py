"""``Lifecycle``: components start in order, stop in reverse, and every stop runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from balancer.lifecycle import Component, Lifecycle


def component(
    log: list[str],
    name: str,
    *,
    fail_start: bool = False,
    fail_stop: bool = False,
    twice: bool = False,
) -> tuple[str, Component]:
    async def run() -> AsyncIterator[None]:
        log.append(f"start {name}")
        if fail_start:
            raise RuntimeError(f"{name} cannot start")
        yield
        log.append(f"stop {name}")
        if fail_stop:
            raise RuntimeError(f"{name} cannot stop")
        if twice:
            yield

    return name, run


async def test_components_start_in_order_and_stop_in_reverse() -> None:
    log: list[str] = []
    life = Lifecycle([component(log, n) for n in "abc"])
    await life.start()
    assert life.started == ["a", "b", "c"]
    await life.stop()
    assert log == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert life.started == []
    await life.stop()  # a second stop has nothing left to do
    assert len(log) == 6


async def test_a_component_that_fails_to_start_stops_the_ones_before_it() -> None:
    log: list[str] = []
    life = Lifecycle(
        [component(log, "a"), component(log, "b", fail_start=True), component(log, "c")]
    )
    with pytest.raises(RuntimeError, match="b cannot start"):
        await life.start()
    assert log == ["start a", "start b", "stop a"]
    assert life.started == []


async def test_every_stop_runs_even_when_one_fails_and_the_errors_are_raised_together() -> None:
    log: list[str] = []
    life = Lifecycle(
        [
            component(log, "a", fail_stop=True),
            component(log, "b"),
            component(log, "c", fail_stop=True),
        ]
    )
    await life.start()
    with pytest.raises(ExceptionGroup) as raised:
        await life.stop()
    assert log[3:] == ["stop c", "stop b", "stop a"]
    assert [str(e) for e in raised.value.exceptions] == ["c cannot stop", "a cannot stop"]


async def test_a_component_with_two_yields_is_an_error() -> None:
    log: list[str] = []
    life = Lifecycle([component(log, "a", twice=True)])
    await life.start()
    with pytest.raises(ExceptionGroup, match="stopping components"):
        await life.stop()


async def test_cancellation_while_starting_is_not_swallowed() -> None:
    log: list[str] = []
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[None]:
        await gate.wait()
        yield

    life = Lifecycle([component(log, "a"), ("slow", slow)])
    task = asyncio.create_task(life.start())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["start a", "stop a"]

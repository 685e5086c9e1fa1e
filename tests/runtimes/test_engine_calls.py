"""The engine runtimes' blocking SDK calls: on threads of their own, and every engine error (the
HTTP client's included) a ``RuntimeFailure``. A fake client stands for the Docker SDK's."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
import requests.exceptions

from balancer.errors import RuntimeFailure
from balancer.runtimes.docker import DockerRuntime
from balancer.runtimes.engine_calls import EngineCalls
from balancer.runtimes.swarm import SwarmRuntime


def fake_client(list_calls: Any) -> Any:
    """What the runtimes' ``list`` asks of the SDK: containers (Docker), services (Swarm)."""
    return SimpleNamespace(
        containers=SimpleNamespace(list=list_calls),
        services=SimpleNamespace(list=list_calls),
        api=SimpleNamespace(),
    )


def runtimes(list_calls: Any) -> list[Any]:
    client = fake_client(list_calls)
    return [
        DockerRuntime(client, image="img", network="net"),
        SwarmRuntime(client, image="img", network="net"),
    ]


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.ConnectionError("connection refused"),
    ],
    ids=["read-timeout", "connection-refused"],
)
async def test_an_http_error_of_the_engine_is_a_runtime_failure(error: Exception) -> None:
    """``requests``' timeouts are not ``DockerException``s: they escaped as themselves, and the
    reconciler and admin API, which handle ``RuntimeFailure``, did not expect them."""

    def fails(**_: Any) -> list[Any]:
        raise error

    for runtime in runtimes(fails):
        with pytest.raises(RuntimeFailure, match="cannot list replicas"):
            await runtime.list()


async def test_engine_calls_do_not_wait_for_the_loops_default_executor() -> None:
    """With every default-executor thread busy (slow getaddrinfo, ring builds), the engine's
    calls still run: they have threads of their own."""
    loop = asyncio.get_running_loop()
    busy = ThreadPoolExecutor(1)
    release = threading.Event()
    loop.set_default_executor(busy)
    blocker = loop.run_in_executor(None, release.wait, 10.0)
    try:
        for runtime in runtimes(lambda **_: []):
            assert await asyncio.wait_for(runtime.list(), 2.0) == []
    finally:
        release.set()
        await blocker
        busy.shutdown()


async def test_a_non_engine_error_is_not_disguised() -> None:
    with pytest.raises(ZeroDivisionError):
        await EngineCalls("test").run("what", lambda: 1 // 0)


@pytest.mark.parametrize(
    ("attached", "address"),
    [("10.0.3.7/24", "10.0.3.7:5000"), ("fd00:3::7/64", "[fd00:3::7]:5000")],
)
def test_a_swarm_replica_is_reached_at_its_tasks_overlay_address(
    attached: str, address: str
) -> None:
    """From the task's network attachment; an IPv6 overlay address in brackets, or the
    balancer would read the address's last group as the port."""
    runtime = SwarmRuntime(fake_client(lambda **_: []), image="img", network="net")
    service = SimpleNamespace(
        id="svc1", name="chlb-3fa91c", attrs={"Spec": {"Labels": {"chlb.replica": "S1"}}}
    )
    task = {
        "Status": {"State": "running"},
        "DesiredState": "running",
        "NetworksAttachments": [{"Network": {"Spec": {"Name": "net"}}, "Addresses": [attached]}],
    }
    handle = runtime._handle(service, [task])  # type: ignore[arg-type]
    assert handle is not None and handle.address == address and handle.name == "S1"

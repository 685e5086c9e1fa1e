"""Blocking calls into a container engine's SDK, off the event loop, on threads of their own.

Owns ``EngineCalls``. The Docker and Swarm runtimes call the Docker SDK, which blocks (and a
Swarm spawn polls its task for up to its start timeout). On the loop's default executor those
calls would take the few threads (min(32, CPUs + 4): 6 on two cores) that ring builds, commit
preparation and every ``getaddrinfo`` of a Redis or Sentinel host name also wait for; eight
replacements after a node failure would then stall the leader's lease renewal. So each runtime
has its own small pool. An error of the engine, the SDK's own or its HTTP client's (a timeout or
a refused connection from ``requests`` is not a ``DockerException``), becomes ``RuntimeFailure``;
anything else propagates as it is. The pool is never shut down: a runtime answers ``list``
after ``close`` too (the contract), and idle threads end with the runtime that owns them.
Must not import at module level: aiohttp, redis, docker (its errors are looked up only once one
was raised, when the SDK is loaded already).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from balancer.errors import RuntimeFailure

T = TypeVar("T")

WORKERS = 8  # as many as the manager starts replicas at once


class EngineCalls:
    """A thread pool for one runtime's SDK calls (see the module docstring)."""

    def __init__(self, name: str, workers: int = WORKERS) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=name)

    async def run(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` on this pool.

        Raises:
            RuntimeFailure: the engine failed or did not answer (``what`` starts the message).
        """
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(call, *args))
        except RuntimeFailure:
            raise
        except Exception as exc:
            if is_engine_error(exc):
                raise RuntimeFailure(f"{what}: {exc}") from exc
            raise


def is_engine_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the Docker SDK's, or its HTTP client's (``requests``)."""
    import docker.errors  # loaded already: the call that raised ran the SDK
    import requests.exceptions

    return isinstance(exc, docker.errors.DockerException | requests.exceptions.RequestException)

"""Keeps a cancelled redis-py call cancelled on Python 3.11.

Owns ``keep_cancellations``. redis-py's asyncio connections bound every send with
``asyncio.wait_for(send, socket_timeout)``. Before Python 3.12, ``wait_for`` returns the send's
result instead of raising ``CancelledError`` when its task is cancelled in the moment the send
completes (CPython gh-86296, fixed in 3.12 by rewriting ``wait_for`` on ``asyncio.timeout``). The
cancellation is then lost: a loop that keeps calling Redis (the health monitor, the announcer)
runs on after its task was cancelled, and ``BalancerService.stop`` waits for it forever. Measured
with redis-py 8.1 on Python 3.11.7 against a real redis-server: a task looping on ``SET`` ignored
13 of 20 cancels (``tests/state/test_redis_cancel.py``).

``keep_cancellations`` gives redis-py's connection module a ``wait_for`` that is 3.12's: the
send under ``asyncio.timeout``, which raises ``TimeoutError`` when the time is up exactly as
``wait_for`` did and never drops a cancellation. Every connection class (plain, TLS, Unix
socket, Sentinel-managed, fakeredis's) sends through that module, so one replacement covers
them all; nothing else of ``asyncio`` changes for redis-py or for anyone else. On 3.12 and later
it does nothing. (fakeredis, used only by tests, loses cancellations in its own in-process
transport as well; that one is not worked around.)
Must not import: aiohttp, docker.
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio.connection as redis_connection

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], seconds: float | None) -> T:
    """``asyncio.wait_for(aw, seconds)`` as Python 3.12 has it: a cancellation is never turned
    into a result (redis-py passes both positionally)."""
    async with asyncio.timeout(seconds):
        return await aw


class _AsyncioWithWaitFor(types.ModuleType):
    """``asyncio`` as seen by redis-py's connection module: all of it, but ``wait_for``."""

    wait_for = staticmethod(wait_for)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


def keep_cancellations() -> None:
    """Make redis-py's sends keep cancellations (idempotent; nothing to do on Python ≥ 3.12)."""
    namespace = vars(redis_connection)  # the module's globals: what its ``asyncio.`` reads
    if sys.version_info < (3, 12) and not isinstance(namespace["asyncio"], _AsyncioWithWaitFor):
        namespace["asyncio"] = _AsyncioWithWaitFor("asyncio")

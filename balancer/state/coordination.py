"""How instances coordinate: who leads, and how a follower hands a change to the leader.

Owns the ``Leadership`` and ``AdminRelay`` protocols and their single-instance implementations
(``SoloLeadership``: always the leader, unfenced; ``NoRelay``: nothing to hand over). The shared
implementations are ``LeaderElector`` (a Redis lease with a fencing token) and ``RedisRelay``.
Must not import: redis, aiohttp, docker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from balancer.errors import NotLeaderError


class Leadership(Protocol):
    """This instance's standing in the leader election."""

    @property
    def is_leader(self) -> bool:
        """True only while this instance certainly holds the lease."""
        ...

    @property
    def token(self) -> int | None:
        """The fencing token of the current term (None: not leader, or an unfenced solo store)."""
        ...

    async def run(self) -> None:
        """Campaign and keep the lease, forever."""
        ...

    async def wait_elected(self) -> None:
        """Return once this instance is the leader."""
        ...

    async def wait_lost(self) -> None:
        """Return once this instance is not (or no longer) the leader."""
        ...

    async def wait_campaigned(self) -> None:
        """Return once the first campaign finished, won or lost."""
        ...

    async def release(self) -> None:
        """Give the lease up (shutdown), so a follower takes over at once."""
        ...


class SoloLeadership:
    """The only instance: always the leader, and its writes need no fencing."""

    is_leader = True
    token: int | None = None

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def wait_elected(self) -> None:
        return

    async def wait_lost(self) -> None:
        await asyncio.Event().wait()

    async def wait_campaigned(self) -> None:
        return

    async def release(self) -> None:
        return


@dataclass(frozen=True)
class AdminReply:
    """The leader's HTTP answer to a handed-over change, replayed byte for byte."""

    status: int
    body: bytes


# (op, arguments) → the answer; ops and their JSON arguments are the admin API's
# (``balancer.api.admin.AdminApi.apply``), e.g. ("add", {"n": 2, "hostnames": []}).
ChangeHandler = Callable[[str, dict[str, Any]], Awaitable[AdminReply]]


class AdminRelay(Protocol):
    """Carries changes (``/add``, ``/rm``, settings, weights) from the instance that received
    them to the leader."""

    async def forward(self, op: str, args: dict[str, Any]) -> AdminReply:
        """Hand a change to the leader and wait for its answer.

        Raises:
            NotLeaderError: no leader took the request in time (nothing was changed).
            StoreUnavailable: the relay (Redis) cannot be reached.
        """
        ...

    async def serve(self, handle: ChangeHandler) -> None:
        """Take handed-over changes and answer them, until cancelled (run by the leader)."""
        ...


class NoRelay:
    """A single instance is always the leader: nothing is ever handed over."""

    async def forward(self, op: str, args: dict[str, Any]) -> AdminReply:
        raise NotLeaderError("this instance is not the leader and has no way to reach one")

    async def serve(self, handle: ChangeHandler) -> None:
        await asyncio.Event().wait()

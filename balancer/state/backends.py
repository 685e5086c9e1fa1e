"""State backends: each one's coordinated set of store, leadership and admin relay.

Owns ``StateBackend`` (what a backend factory returns) and ``memory_backend`` (one instance:
``InMemoryStore``, ``SoloLeadership``, ``NoRelay``). A backend's three parts belong together:
its leadership's fencing token is what its store checks, and its relay reaches the leader its
leadership elects; so a backend is chosen whole, by one factory (Redis:
``balancer.state.redis_backend.redis_backend``), never assembled part by part.
Must not import: redis, aiohttp, docker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from balancer.state.coordination import AdminRelay, Leadership, NoRelay, SoloLeadership
from balancer.state.memory import InMemoryStore
from balancer.state.store import Clock, Store

log = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class StateBackend:
    """A backend's store, leadership and relay, and what closing it takes.

    Use it as an async context manager, or call ``aclose`` once when done. Closing frees the
    backend's connections; it does not give up the lease (``leadership.release`` does that).
    """

    store: Store
    leadership: Leadership
    relay: AdminRelay
    closers: Sequence[Closer] = ()  # run in reverse order by ``aclose``
    shared: bool = False  # other balancer instances may use the same state

    async def aclose(self) -> None:
        """Run every closer, last first; each runs even when an earlier one failed.

        Raises:
            ExceptionGroup: the closers that failed (after all of them ran).
        """
        errors: list[Exception] = []
        for close in reversed(self.closers):
            try:
                await close()
            except Exception as exc:  # collected: the next closer must still run
                log.warning("closing the state backend: %r", exc)
                errors.append(exc)
        if errors:
            raise ExceptionGroup("closing the state backend failed", errors)

    async def __aenter__(self) -> StateBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def memory_backend(*, clock: Clock = time.monotonic) -> StateBackend:
    """The single-instance backend: state in this process, always the leader, nothing relayed.

    Args:
        clock: what liveness and instance announcements expire on (tests inject one).
    """
    return StateBackend(InMemoryStore(clock), SoloLeadership(), NoRelay())

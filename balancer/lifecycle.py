"""Components started in order and stopped in reverse: aiohttp's cleanup contexts, for a service.

Owns ``Lifecycle``. A component is an async generator function with exactly one ``yield``: the
code before it starts the component, the code after it stops it (aiohttp's ``cleanup_ctx``).
``start`` runs each component up to its ``yield``, in order; when one fails, the ones already
started are stopped in reverse and the error is raised. ``stop`` resumes every started component
in reverse order, each one even when an earlier one failed, and raises what failed together
(an ``ExceptionGroup``) once all have run. Cancellation is never swallowed.
Must not import: aiohttp, redis, docker, or project modules.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

log = logging.getLogger(__name__)

Component = Callable[[], AsyncIterator[None]]


class Lifecycle:
    """Starts and stops named components (see the module docstring)."""

    def __init__(self, components: Sequence[tuple[str, Component]]) -> None:
        self._components = list(components)
        self._started: list[tuple[str, AsyncIterator[None]]] = []

    @property
    def started(self) -> list[str]:
        """The names of the components running now, in start order."""
        return [name for name, _ in self._started]

    async def start(self) -> None:
        """Start every component in order.

        Raises:
            Exception: the first component that failed to start (those before it are stopped).
        """
        for name, component in self._components:
            running = component()
            try:
                await anext(running)
            except BaseException:
                log.error("%s failed to start; stopping what did", name)
                await self._stop_quietly()
                raise
            self._started.append((name, running))

    async def stop(self) -> None:
        """Stop every started component, last started first.

        Raises:
            ExceptionGroup: the components whose stop failed (every other one still stopped).
        """
        errors: list[Exception] = []
        while self._started:
            name, running = self._started.pop()
            try:
                await anext(running)
            except StopAsyncIteration:
                continue
            except Exception as exc:
                log.exception("%s failed to stop cleanly", name)
                errors.append(exc)
                continue
            errors.append(RuntimeError(f"component {name!r} yielded more than once"))
        if errors:
            raise ExceptionGroup("stopping components", errors)

    async def _stop_quietly(self) -> None:
        with contextlib.suppress(ExceptionGroup):  # logged; the start error is the one to raise
            await self.stop()

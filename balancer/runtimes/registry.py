"""The runtime registry: a runtime's name → its configuration section and its factory.

Owns ``RuntimeEntry``, ``RuntimeRegistry`` and ``RUNTIMES``, the registry ``lb-balancer`` uses.
A runtime is one module that defines a frozen dataclass, its section (each field declared with
``balancer.setting.setting``: flag, ``LB_*`` variable, TOML key and help), and a factory that
builds the ``ReplicaRuntime`` from that section; adding one to ``RUNTIMES`` below is the only
other change. ``balancer.config`` builds the flags of every registered runtime from its section
(``lb-balancer --help`` shows one group per runtime), ``Settings`` holds a section per runtime,
and ``__main__`` calls the chosen runtime's factory. A section whose ``implied`` property is true
picks its runtime whatever ``--runtime`` says (``--backends`` selects the static runtime).

The built-in runtimes are named by module and imported the first time an entry is asked for, so
this module and ``balancer.config`` import no engine: a runtime's module must itself be
importable without its engine's SDK (it imports the SDK in its factory, or where it calls it),
so ``--help`` and the settings of the process runtime never load the Docker SDK.
Must not import: asyncio, aiohttp, redis, docker.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from balancer.errors import ConfigError

if TYPE_CHECKING:
    from balancer.runtimes.base import ReplicaRuntime


@dataclass(frozen=True)
class RuntimeEntry:
    """A runtime: its name, its configuration section (a frozen dataclass whose defaults are a
    working configuration) and the factory that builds it from that section."""

    name: str
    section: type[Any]
    factory: Callable[[Any], ReplicaRuntime]


@dataclass(frozen=True)
class _Lazy:
    """A built-in runtime, named by its module, its section class and its factory function."""

    module: str
    section: str
    factory: str

    def load(self, name: str) -> RuntimeEntry:
        module = importlib.import_module(self.module)
        return RuntimeEntry(name, getattr(module, self.section), getattr(module, self.factory))


class RuntimeRegistry:
    """Runtimes by name, in registration order (the order ``--help`` shows them in)."""

    def __init__(self, **builtin: tuple[str, str, str]) -> None:
        """``builtin``: name → (module, section class, factory function), imported lazily."""
        self._entries: dict[str, RuntimeEntry | _Lazy] = {
            name: _Lazy(*spec) for name, spec in builtin.items()
        }

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def check_name(self, name: str) -> None:
        """Raises ConfigError, listing the registered runtimes, if ``name`` is not one."""
        if name not in self._entries:
            raise ConfigError(f"runtime must be one of {', '.join(self._entries)}; got {name!r}")

    def entry(self, name: str) -> RuntimeEntry:
        """The runtime ``name``.

        Raises:
            ConfigError: when no runtime has that name (the message lists the registered ones).
        """
        self.check_name(name)
        found = self._entries[name]
        if isinstance(found, _Lazy):
            found = self._entries[name] = found.load(name)
        return found

    def sections(self) -> dict[str, type[Any]]:
        """Every registered runtime's section class, by runtime name."""
        return {name: self.entry(name).section for name in self._entries}

    def build(self, name: str, section: Any) -> ReplicaRuntime:
        """The runtime ``name``, built from its ``section``.

        Raises:
            ConfigError: when no runtime has that name, or ``section`` is not its section.
        """
        entry = self.entry(name)
        if not isinstance(section, entry.section):
            raise ConfigError(f"runtime {name} takes a {entry.section.__name__}")
        return entry.factory(section)

    @contextmanager
    def registered(self, entry: RuntimeEntry) -> Iterator[RuntimeEntry]:
        """``entry`` registered for the duration of the block (tests add their own runtime)."""
        if entry.name in self._entries:
            raise ValueError(f"a runtime named {entry.name!r} is already registered")
        self._entries[entry.name] = entry
        try:
            yield entry
        finally:
            del self._entries[entry.name]


RUNTIMES = RuntimeRegistry(
    process=("balancer.runtimes.process", "ProcessSettings", "process_runtime"),
    docker=("balancer.runtimes.docker", "DockerSettings", "docker_runtime"),
    static=("balancer.runtimes.static", "StaticSettings", "static_runtime"),
    swarm=("balancer.runtimes.swarm", "SwarmSettings", "swarm_runtime"),
    dns=("balancer.runtimes.dns", "DnsSettings", "dns_runtime"),
)

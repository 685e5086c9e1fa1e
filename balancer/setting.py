"""How a settings section declares a field, and the checks sections share.

Owns ``setting`` (a dataclass field with its flat key: the ``--flag``, ``LB_*`` variable and
TOML key users set, which may differ from the field's name, and its help), ``derived`` (a value
a section computes once from its settings), ``settable`` and the small checks every section's
``__post_init__`` uses, raising ``ConfigError`` that names the flat key. The sections themselves
are in ``balancer.sections`` and, one per runtime, in each runtime's module.
Must not import: asyncio, aiohttp, redis, docker, or project modules other than
``balancer.errors``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import field
from typing import Any

from balancer.errors import ConfigError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STATUSES = re.compile(r"([0-9]{3})(?:-([0-9]{3}))?")


def setting(default: Any, key: str, help: str, *, secret: bool = False) -> Any:
    """A section field: its default, its flat key (flag ``--key-with-dashes``, variable
    ``LB_KEY``, TOML ``key``) and its help. A secret is left out of ``repr`` and never shown in
    an error message."""
    meta = {"key": key, "help": help, "secret": secret}
    return field(default=default, repr=not secret, metadata=meta)


def derived() -> Any:
    """A value a section computes from its settings in ``__post_init__`` (not a setting)."""
    return field(init=False, repr=False, compare=False)


def settable(section: type[Any]) -> list[dataclasses.Field[Any]]:
    """The fields of ``section`` users set (those declared with ``setting``)."""
    return [f for f in dataclasses.fields(section) if "key" in f.metadata]


def check(checks: Iterable[tuple[bool, str]]) -> None:
    """Raise ``ConfigError`` with the message of the first failed check."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def positive(section: object, *names: str) -> list[tuple[bool, str]]:
    """Checks that the named fields (seconds) are positive (NaN is not)."""
    keys = {f.name: f.metadata["key"] for f in settable(type(section))}
    return [(getattr(section, n) > 0, f"{keys[n]} must be positive") for n in names]


def at_least_one(section: object, *names: str) -> list[tuple[bool, str]]:
    keys = {f.name: f.metadata["key"] for f in settable(type(section))}
    return [(getattr(section, n) >= 1, f"{keys[n]} must be at least 1") for n in names]


def comma_list(spec: str) -> tuple[str, ...]:
    """The non-empty, stripped items of a comma list."""
    return tuple(item.strip() for item in spec.split(",") if item.strip())


def parse_statuses(name: str, spec: str, low: int, high: int) -> frozenset[int]:
    """The statuses of a spec such as ``"500-599"`` or ``"502-504,500"``.

    Raises:
        ConfigError: when a part is not a status or a range ``a-b`` with low <= a <= b <= high.
    """
    statuses: set[int] = set()
    for part in spec.split(","):
        match = _STATUSES.fullmatch(part.strip())
        first = int(match[1]) if match else 0
        last = int(match[2] or first) if match else 0
        if not low <= first <= last <= high:
            raise ConfigError(
                f"{name} must be a comma list of statuses and ranges (a-b) within "
                f"{low}..{high}; got {spec!r}"
            )
        statuses.update(range(first, last + 1))
    return frozenset(statuses)


def env_name_checks(key: str, names: tuple[str, ...]) -> list[tuple[bool, str]]:
    """Checks of a comma list of environment variable names a replica may get."""
    return [
        (
            all(_ENV_NAME.fullmatch(n) for n in names),
            f"{key} must be a comma list of environment variable names",
        ),
        (
            not any(n.startswith("LB_") for n in names),
            f"{key} may not name an LB_* variable: those are the balancer's settings, its "
            "secrets among them",
        ),
    ]

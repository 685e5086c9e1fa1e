"""Replica names: what is valid, the server id a name implies, and generated names.

Owns the naming rules of the wire contract. A replica name is either ``Server <token>`` (the
contract's own style, e.g. ``Server 1``) or a single hostname-like token (``S5``, ``web-3``).
The replica's ``SERVER_ID`` (the one token that ``GET /home`` reports) is the token after
``Server `` or the whole name, so it never contains a space; two members may not share one.
Must not import: asyncio, aiohttp, redis, docker or other project modules.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection

_TOKEN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
_NAME_RE = re.compile(rf"(?:Server )?{_TOKEN}")
SERVER_PREFIX = "Server "


def is_valid_name(name: object) -> bool:
    """True when ``name`` is a string the contract accepts as a replica hostname."""
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def server_id(name: str) -> str:
    """The one-token id a replica named ``name`` reports (``Server 7`` → ``7``, ``S5`` → ``S5``)."""
    return name.removeprefix(SERVER_PREFIX)


def initial_names(count: int) -> list[str]:
    """The names of the replicas a fresh deployment starts with: ``Server 1`` … ``Server N``."""
    return [f"{SERVER_PREFIX}{i}" for i in range(1, count + 1)]


def generate_name(taken_ids: Collection[str]) -> str:
    """A new random name (``Server 3fa91c``) whose server id is not in ``taken_ids``.

    Replacements and unnamed additions get random names so a name is never silently reused for
    a different process.
    """
    while True:
        token = secrets.token_hex(3)
        if token not in taken_ids:
            return f"{SERVER_PREFIX}{token}"

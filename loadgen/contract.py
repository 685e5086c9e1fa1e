"""What loadgen knows about the wire contract (../shared/SPEC.md), kept in one place.

Owns: the exact error strings, how a replica's id is read from a ``/home`` answer (like the
reference clients: ``message.split()[-1]``), how an id maps to a ``/rep`` name, and the shape
checks of ``/rep``-style answers. Pure: no I/O.
Must not import anything from ``balancer`` or ``server``: loadgen speaks only HTTP.
"""

from __future__ import annotations

import json
import re

SERVER_PREFIX = "Server "
ADD_TOO_MANY = "<Error> Length of hostname list is more than newly added instances"
RM_TOO_MANY = "<Error> Length of hostname list is more than removable instances"


def unknown_path_error(path: str) -> str:
    return f"<Error> '{path}' endpoint does not exist in server replicas"


def failure_body(message: str) -> dict[str, str]:
    return {"message": message, "status": "failure"}


def replica_id(message: object) -> str | None:
    """The replica id in a ``/home`` message (``Hello from Server: 2`` → ``2``), else None."""
    if not isinstance(message, str) or not message.split():
        return None
    return message.split()[-1]


def replica_from_body(raw: bytes) -> str | None:
    """The replica id in a raw ``/home`` answer; None if the body is not that shape."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return replica_id(body.get("message")) if isinstance(body, dict) else None


def server_id(name: str) -> str:
    """The one-token id a replica named ``name`` reports (``Server 7`` → ``7``, ``S5`` → ``S5``)."""
    return name.removeprefix(SERVER_PREFIX)


def name_for_id(rid: str, names: list[str]) -> str:
    """The ``/rep`` name that answers as ``rid`` (``2`` → ``Server 2``); ``rid`` if none does."""
    return next((n for n in names if server_id(n) == rid), rid)


def natural_key(name: str) -> list[tuple[int, int, str]]:
    """Sort key that puts ``Server 2`` before ``Server 10``."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p]


def replicas_shape_error(body: object) -> str | None:
    """Why ``body`` is not ``{"message": {"N": n, "replicas": [n names]}, "status": ...}``."""
    if not isinstance(body, dict) or set(body) != {"message", "status"}:
        return f"not {{message, status}}: {body!r}"
    if body["status"] != "successful":
        return f"status is {body['status']!r}"
    msg = body["message"]
    if not isinstance(msg, dict) or set(msg) != {"N", "replicas"}:
        return f"message is not {{N, replicas}}: {msg!r}"
    n, names = msg["N"], msg["replicas"]
    if isinstance(n, bool) or not isinstance(n, int):
        return f"N is not an integer: {n!r}"
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        return f"replicas is not a list of names: {names!r}"
    if len(names) != n or len(set(names)) != n:
        return f"N={n} but replicas={names!r}"
    return None

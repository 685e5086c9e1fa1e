"""The wire contract's response bodies, byte for byte (the README's "Using it" section lists them).

Owns every JSON body and error string a client of the contract sees. Pure: builds bytes only.
Must not import: aiohttp, redis, docker or other project modules.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

CONTENT_TYPE = "application/json"

ADD_TOO_MANY_NAMES = "Length of hostname list is more than newly added instances"
RM_TOO_MANY_NAMES = "Length of hostname list is more than removable instances"


def replicas_body(names: Sequence[str]) -> bytes:
    """``/rep``, ``/add`` and ``/rm`` success: N and the replica names."""
    message = {"N": len(names), "replicas": list(names)}
    return json.dumps({"message": message, "status": "successful"}).encode()


def message_body(message: Any) -> bytes:
    """A success body of the operator endpoints: ``{"message": …, "status": "successful"}``."""
    return json.dumps({"message": message, "status": "successful"}).encode()


def error_body(message: str) -> bytes:
    """A failure body: ``{"message": "<Error> …", "status": "failure"}``."""
    return json.dumps({"message": f"<Error> {message}", "status": "failure"}).encode()


def no_endpoint_message(path: str) -> str:
    """The message for a path that no replica serves."""
    return f"'{path}' endpoint does not exist in server replicas"

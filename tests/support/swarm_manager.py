"""A Docker daemon that is a swarm manager for the duration of a block.

Owns ``swarm_manager``: when the daemon is in no swarm it runs ``docker swarm init`` (on
127.0.0.1) and leaves that swarm at the end, and only then: a swarm it did not make is left as
it was. A node that is in a swarm without being a manager is a skip, with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest


@contextlib.contextmanager
def swarm_manager(client: Any) -> Iterator[Any]:
    """``client``'s daemon as a swarm manager (see the module docstring)."""
    state = client.info().get("Swarm", {})
    initialised = False
    if state.get("LocalNodeState") == "inactive":
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        initialised = True
    elif not state.get("ControlAvailable"):
        pytest.skip(f"this node is in a swarm but not a manager ({state.get('LocalNodeState')})")
    try:
        yield client
    finally:
        if initialised:
            client.swarm.leave(force=True)

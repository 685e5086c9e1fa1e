"""Every Redis key and channel name, under one prefix.

Owns the names only (no I/O). Layout:
  lb:membership        hash {epoch, doc}: the versioned member list (doc is JSON)
  lb:changes           pub/sub channel: the new epoch after every committed change (a hint)
  lb:alive:<name>      string with a TTL: the replica passed a heartbeat recently
  lb:leader            string with a TTL: "<instance>:<token>" of the current leader
  lb:fence             counter: the fencing token of the latest leader
  lb:fence:server      run_id of the Redis server that minted the latest token (Sentinel mode)
  lb:replicas          hash name → JSON runtime record (address, locator…) of every started replica
  lb:instance:<id>     string with a TTL: JSON status of one balancer instance
  lb:admin:queue       list: /add and /rm requests followers hand to the leader
  lb:admin:reply:<id>  list with a TTL: the leader's answer to one handed-over request
Must not import: anything but the standard library.
"""

from __future__ import annotations

PREFIX = "lb:"


def membership(prefix: str = PREFIX) -> str:
    return f"{prefix}membership"


def changes(prefix: str = PREFIX) -> str:
    return f"{prefix}changes"


def alive(name: str, prefix: str = PREFIX) -> str:
    return f"{prefix}alive:{name}"


def alive_pattern(prefix: str = PREFIX) -> str:
    return f"{prefix}alive:*"


def leader(prefix: str = PREFIX) -> str:
    return f"{prefix}leader"


def fence(prefix: str = PREFIX) -> str:
    return f"{prefix}fence"


def fence_server(prefix: str = PREFIX) -> str:
    """The run_id of the server that minted the latest fencing token (``redis_leadership``)."""
    return f"{prefix}fence:server"


def replicas(prefix: str = PREFIX) -> str:
    return f"{prefix}replicas"


def instance(instance_id: str, prefix: str = PREFIX) -> str:
    return f"{prefix}instance:{instance_id}"


def instance_pattern(prefix: str = PREFIX) -> str:
    return f"{prefix}instance:*"


def admin_queue(prefix: str = PREFIX) -> str:
    return f"{prefix}admin:queue"


def admin_reply(request_id: str, prefix: str = PREFIX) -> str:
    return f"{prefix}admin:reply:{request_id}"


def events(prefix: str = PREFIX) -> str:
    """The list of the latest membership change events, newest first (bounded)."""
    return f"{prefix}events"

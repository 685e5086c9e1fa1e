"""The balancer's exception tree.

Owns the exceptions raised across module boundaries::

    LBError
    ├── ConfigError          bad setting value (env, flag or file)
    ├── RequestError         a client's admin request is invalid → 400, nothing changed
    ├── ConflictError        the change lost a race with another change → retried, then 409
    ├── StaleLeaderError     a write carried a fencing token older than the current leader's
    ├── NotLeaderError       a change that only the leader may make reached a follower
    ├── StoreUnavailable     the shared state (Redis) cannot be reached → writes answer 503
    └── RuntimeFailure       a replica could not be started or stopped → 503
        └── SpawnTimeout     started, but never answered its first heartbeat

Must not import: any project module or third-party package.
"""

from __future__ import annotations


class LBError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(LBError):
    """A setting has a value the balancer cannot run with."""


class RequestError(LBError):
    """An admin request is invalid; the message is shown to the client after ``<Error> ``."""


class ConflictError(LBError):
    """A membership change kept losing the race against concurrent changes."""


class StaleLeaderError(LBError):
    """This instance's leadership ended: its write was refused by the fencing token."""


class NotLeaderError(LBError):
    """Only the elected leader changes replicas, and this instance is not (or no longer) it."""


class StoreUnavailable(LBError):
    """The shared state store cannot be reached; routing goes on with the last good ring."""


class RuntimeFailure(LBError):
    """The replica runtime failed to start or stop a replica."""


class SpawnTimeout(RuntimeFailure):
    """A replica started but did not pass its first heartbeat in time."""

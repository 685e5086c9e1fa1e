"""The sections of the settings besides the data path's: one frozen dataclass per concern.

Owns ``RoutingSettings``, ``HealthSettings``, ``ReplicaSettings``, ``StateSettings``,
``AdminSettings`` and ``LogSettings``. The data path's sections are in ``balancer.http.sections``,
each runtime's in the runtime's module; ``balancer.config`` puts them together into
``Settings``. Each field is declared with ``balancer.setting.setting``: its flat key (the
``--flag``, ``LB_*`` variable and TOML key users know, which may differ from the field's name:
``heartbeat_interval_s`` is ``HealthSettings.interval_s``) and its help. A section checks its
own fields in ``__post_init__`` and raises ``ConfigError`` naming the flat key; values derived
from a section (the ring settings, the status sets, the liveness TTL) are computed there or in
a property, once.
Must not import: asyncio, aiohttp, redis, docker (nor anything that imports them at module
level: settings are parsed before anything starts).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from balancer.hashing import Algorithm, HashName, Probing, RingSettings
from balancer.hashing.hashes import DEFAULT_SEED, SEED_BITS, key_command, runs_on_public_seed
from balancer.runtimes.registry import RUNTIMES
from balancer.setting import (
    at_least_one,
    check,
    derived,
    parse_statuses,
    positive,
    settable,
    setting,
)

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
_PATH = re.compile(r"/[!-\"$-~]*")  # goes into a request line: printable, no space, no fragment


@dataclass(frozen=True)
class RoutingSettings:
    """Where a key goes: the algorithm, its hash and their knobs.

    ``ring`` is what the hashing core takes: these, with ``vnodes`` resolved."""

    algorithm: Algorithm = setting(
        "slots",
        "algorithm",
        "key → replica algorithm: slots (default: balanced hash slots), ring (ketama), maglev, "
        "rendezvous, or assignment (the literal scheme); the first instance to boot stores it in "
        "the shared state, and PUT /lb/settings changes it on every instance",
    )
    hash_name: HashName = setting(
        "xxh3",
        "hash_name",
        "64-bit hash for the ring: xxh3, blake2b (keyed) or siphash (SipHash-2-4, keyed: resists "
        "hash flooding); a keyed hash refuses to start without a secret --hash-seed",
    )
    hash_seed: int = setting(
        DEFAULT_SEED,
        "hash_seed",
        "fixed seed of the hash, decimal or 0x hex; all instances must agree; below 2**64, or "
        "2**128 for siphash; for a keyed hash it is the key: random, secret, never the default "
        "(pass it through LB_HASH_SEED or the file, not the command line, which other local "
        "users can read)",
        secret=True,
    )
    points_per_weight: int = setting(
        160, "points_per_weight", "ring points per weight unit (algorithm=ring)"
    )
    slots: int = setting(512, "slots", "M, slots of the assignment scheme")
    vnodes: int | None = setting(
        None,
        "vnodes",
        "K, virtual servers per replica in the assignment scheme (default log2 M)",
    )
    probing: Probing = setting(
        "linear", "probing", "assignment scheme slot conflicts: linear or quadratic"
    )
    balance_factor: float = setting(
        0.0,
        "balance_factor",
        "bounded loads: 0 = off (default), else c >= 1 (HAProxy's hash-balance-factor / 100, "
        "e.g. 1.25): a replica with ceil(c × (requests in flight + 1) / replicas) in flight "
        "passes new requests to the key's next replica; counted per process",
    )
    ring: RingSettings = derived()

    def __post_init__(self) -> None:
        bits = SEED_BITS.get(self.hash_name, 64)
        check(
            [
                *at_least_one(self, "slots", "points_per_weight"),
                (self.vnodes is None or self.vnodes >= 1, "vnodes must be at least 1"),
                # The message never shows the seed: with siphash it is a secret key.
                (
                    0 <= self.hash_seed < 1 << bits,
                    f"hash_seed must be in [0, 2**{bits}) for hash_name {self.hash_name}",
                ),
                (
                    not runs_on_public_seed(self.hash_name, self.hash_seed),
                    f"{self.hash_name} needs a secret key: set LB_HASH_SEED (or hash_seed in the "
                    f"--config file) to a random {bits}-bit value, e.g. "
                    f"`{key_command(self.hash_name)}`; the default seed is in the source, so it "
                    "is public",
                ),
                (
                    self.balance_factor == 0.0 or 1.0 <= self.balance_factor < 100.0,
                    "balance_factor must be 0 (off) or a factor in [1, 100): 1.25, not HAProxy's "
                    "percentage 125",
                ),
            ]
        )
        fields = {f.name: getattr(self, f.name) for f in settable(RoutingSettings)}
        fields["vnodes"] = self.vnodes or max(1, int(math.log2(self.slots)))
        object.__setattr__(self, "ring", RingSettings(**fields))


@dataclass(frozen=True)
class HealthSettings:
    """Active health checks (HAProxy's rise/fall), readiness of new replicas, replacement."""

    interval_s: float = setting(
        0.5, "heartbeat_interval_s", "seconds between health probes of each replica"
    )
    timeout_s: float = setting(0.5, "heartbeat_timeout_s", "seconds a probe may take")
    fails: int = setting(
        2, "heartbeat_fails", "fall: consecutive failed probes that mark a replica DOWN"
    )
    rise: int = setting(
        2, "heartbeat_rise", "rise: consecutive passed probes that bring a DOWN replica back UP"
    )
    jitter: float = setting(
        0.1, "heartbeat_jitter", "spread of the probe interval, a fraction of it (0..0.5)"
    )
    path: str = setting(
        "/heartbeat",
        "health_path",
        "path (and query) the health probes GET on each replica, e.g. a readiness check that "
        "exercises what requests need; default the contract's /heartbeat",
    )
    status: str = setting(
        "200",
        "health_status",
        "statuses that pass a health probe: comma list of statuses and ranges within 200..599, "
        "e.g. 200-399 (redirects are not followed); default 200",
    )
    spawn_timeout_s: float = setting(
        10.0, "spawn_timeout_s", "seconds a new replica has to pass its first heartbeat"
    )
    replace_after_s: float = setting(
        0.0,
        "replace_after_s",
        "seconds a DOWN replica that still runs may take to rise before it is replaced (0: "
        "replace at once; one whose process or container is gone is always replaced at once)",
    )
    status_set: frozenset[int] = derived()

    def __post_init__(self) -> None:
        check(
            [
                *at_least_one(self, "fails", "rise"),
                *positive(self, "interval_s", "timeout_s", "spawn_timeout_s"),
                (0.0 <= self.jitter <= 0.5, "heartbeat_jitter must be in [0, 0.5]"),
                (
                    _PATH.fullmatch(self.path) is not None,
                    "health_path must start with / and be printable ASCII without spaces or #",
                ),
                (self.replace_after_s >= 0, "replace_after_s must be at least 0"),
            ]
        )
        statuses = parse_statuses("health_status", self.status, 200, 599)
        object.__setattr__(self, "status_set", statuses)

    @property
    def probe_timeout_s(self) -> float:
        """What one probe may take: its timeout, but never longer than the interval."""
        return min(self.timeout_s, self.interval_s)

    @property
    def alive_ttl_s(self) -> float:
        """How long a passed probe keeps a replica alive in the store: long enough to outlast
        ``fails - 1`` missed probes at the longest jittered interval, plus one probe's time, so
        only the health checks' own DOWN verdict (which drops it at once) ends it early."""
        return self.interval_s * (1 + self.jitter) * self.fails + self.probe_timeout_s


@dataclass(frozen=True)
class ReplicaSettings:
    """How many replicas, and which runtime runs them (its own section holds its settings)."""

    count: int = setting(3, "replicas", "N, replicas started at boot and kept through failures")
    max_count: int = setting(
        64, "max_replicas", "upper bound on replicas; /add beyond it is refused"
    )
    runtime: str = setting(
        "process",
        "runtime",
        "how replicas run: process (local processes on loopback), docker (containers on "
        "--docker-network, through the Docker socket) or static (the --backends list, which "
        "selects it by itself)",
    )

    def __post_init__(self) -> None:
        check(
            [
                *at_least_one(self, "max_count"),
                (0 <= self.count <= self.max_count, "replicas must be in 0..max_replicas"),
            ]
        )
        RUNTIMES.check_name(self.runtime)


@dataclass(frozen=True)
class StateSettings:
    """Where the state shared by several instances lives (in memory when alone)."""

    redis_url: str = setting(
        "",
        "redis_url",
        "redis:// URL of the state shared by several instances (empty: this instance alone, "
        "state in memory)",
        secret=True,  # may carry a password
    )
    redis_timeout_s: float = setting(
        1.0, "redis_timeout_s", "seconds any single Redis call may take"
    )
    leader_ttl_s: float = setting(
        3.0, "leader_ttl_s", "seconds the leader lease lasts without renewal (renewed every third)"
    )
    instance_id: str = setting(
        "", "instance_id", "this instance's name in the shared state (default: <hostname>:<port>)"
    )
    redis_sentinel: str = setting(
        "",
        "redis_sentinel",
        "host:port,host:port,... of Redis Sentinels: the shared state follows the master they "
        "name (--redis-master-name) through failovers; --redis-url then gives only the db and "
        "password (empty: no Sentinel)",
    )
    redis_master_name: str = setting(
        "chlb", "redis_master_name", "the master's name in the Sentinels' configuration"
    )
    sentinels: tuple[tuple[str, int], ...] = derived()

    def __post_init__(self) -> None:
        check(
            [
                *positive(self, "redis_timeout_s", "leader_ttl_s"),
                (self.redis_master_name != "", "redis_master_name must not be empty"),
                (
                    # the Sentinel clients speak plain TCP: a rediss:// URL would send its
                    # password in clear text to the master they name
                    not (self.redis_sentinel and self.redis_url.startswith("rediss:")),
                    "redis_url: rediss:// (TLS) is not supported with redis_sentinel",
                ),
            ]
        )
        object.__setattr__(self, "sentinels", _sentinels(self.redis_sentinel))

    @property
    def shared(self) -> bool:
        """Whether the state lives in Redis (a URL or Sentinels), shared with other instances."""
        return bool(self.redis_url or self.redis_sentinel)


def _sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` → ((host, port), ...); an IPv6 host goes in brackets."""
    found: list[tuple[str, int]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, _, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        check(
            [
                (
                    host != "" and port.isdigit() and 0 < int(port) < 65536,
                    f"redis_sentinel: {item!r} is not host:port",
                )
            ]
        )
        found.append((host, int(port)))
    return tuple(found)


@dataclass(frozen=True)
class AdminSettings:
    """The admin API."""

    token: str = setting(
        "",
        "admin_token",
        "bearer token the changes (POST /add, DELETE|POST /rm, PUT /lb/settings, PUT /lb/weight) "
        "require as 'Authorization: Bearer <token>'; reads stay open; empty = off (the "
        "contract's clients send none). A secret: pass it through LB_ADMIN_TOKEN or the file",
        secret=True,
    )

    def __post_init__(self) -> None:
        check(
            [
                (
                    all("!" <= c <= "~" for c in self.token),
                    "admin_token must be printable ASCII without spaces",
                )
            ]
        )


@dataclass(frozen=True)
class LogSettings:
    """The balancer's own log (the sampled access log is --access-log-sample, under http)."""

    level: LogLevel = setting("INFO", "log_level", "DEBUG, INFO, WARNING or ERROR")

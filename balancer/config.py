"""Settings: parsed once from defaults, an optional TOML file, ``LB_*`` env vars and CLI flags.

Owns ``Settings`` (frozen) and ``load_settings``. Precedence, lowest first: field defaults, the
file named by ``--config``/``LB_CONFIG``, environment ``LB_<FIELD>``, flags ``--<field>``
(underscores become dashes). Only ``__main__`` calls ``load_settings`` with the real env/argv.
Must not import: asyncio, aiohttp, redis, docker (nor anything that imports them at module
level: settings are parsed before anything starts).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from balancer.errors import ConfigError
from balancer.hashing import Algorithm, HashName, Probing, RingSettings
from balancer.hashing.hashes import DEFAULT_SEED, SEED_BITS, key_command, runs_on_public_seed

RuntimeName = Literal["process", "docker"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

_HELP: dict[str, str] = {
    "host": "address the balancer listens on",
    "port": "port the balancer listens on",
    "replicas": "N, replicas started at boot and kept through failures",
    "max_replicas": "upper bound on replicas; /add beyond it is refused",
    "algorithm": "key → replica algorithm: slots (default: balanced hash slots), ring (ketama), "
    "maglev, rendezvous, or assignment (the literal scheme); the first instance to boot stores "
    "it in the shared state, and PUT /lb/settings changes it on every instance",
    "hash_name": "64-bit hash for the ring: xxh3, blake2b (keyed) or siphash (SipHash-2-4, "
    "keyed: resists hash flooding); a keyed hash refuses to start without a secret "
    "--hash-seed",
    "hash_seed": "fixed seed of the hash, decimal or 0x hex; all instances must agree; below "
    "2**64, or 2**128 for siphash; for a keyed hash it is the key: random, secret, never the "
    "default (pass it through LB_HASH_SEED or the file, not the command line, which other "
    "local users can read)",
    "points_per_weight": "ring points per weight unit (algorithm=ring)",
    "slots": "M, slots of the assignment scheme",
    "vnodes": "K, virtual servers per replica in the assignment scheme (default log2 M)",
    "probing": "assignment scheme slot conflicts: linear or quadratic",
    "balance_factor": "bounded loads: 0 = off (default), else c >= 1 (HAProxy's "
    "hash-balance-factor / 100, e.g. 1.25): a replica with ceil(c × (requests in flight + 1) "
    "/ replicas) in flight passes new requests to the key's next replica; counted per "
    "process",
    "key_source": "comma list tried in order: query:<name>, header:<name>, cookie:<name>, ip, "
    "path; no match → a random 6-digit id",
    "heartbeat_interval_s": "seconds between health probes of each replica",
    "heartbeat_timeout_s": "seconds a probe may take",
    "heartbeat_fails": "fall: consecutive failed probes that mark a replica DOWN",
    "heartbeat_rise": "rise: consecutive passed probes that bring a DOWN replica back UP",
    "heartbeat_jitter": "spread of the probe interval, a fraction of it (0..0.5)",
    "health_path": "path (and query) the health probes GET on each replica, e.g. a readiness "
    "check that exercises what requests need; default the contract's /heartbeat",
    "health_status": "statuses that pass a health probe: comma list of statuses and ranges "
    "within 200..599, e.g. 200-399 (redirects are not followed); default 200",
    "replace_after_s": "seconds a DOWN replica that still runs may take to rise before it is "
    "replaced (0: replace at once; one whose process or container is gone is always replaced "
    "at once)",
    "spawn_timeout_s": "seconds a new replica has to pass its first heartbeat",
    "upstream_connect_timeout_s": "seconds to connect to a replica",
    "upstream_timeout_s": "seconds without a byte to or from a replica while it owes an answer "
    "(HAProxy's timeout server: an inactivity timeout, so long uploads and downloads that "
    "progress are not cut): 504, or a reset of a response already under way",
    "upstream_total_timeout_s": "seconds from sending a request to a replica to its complete "
    "answer, whatever the progress (0 = no bound)",
    "client_timeout_s": "seconds without progress while the balancer waits for the client: "
    "request body bytes that do not arrive (408), a response it does not read, the rest of a "
    "body after an early answer (HAProxy's timeout client)",
    "client_idle_timeout_s": "seconds an idle keep-alive client connection stays open",
    "max_connections": "most client connections one process holds (HAProxy's maxconn); 0 = "
    "what the descriptor limit allows, raised to its hard maximum at start: (limit - 256) / 2; "
    "past it a new connection is closed at once",
    "header_timeout_s": "seconds a client has to send a complete request head (else 408)",
    "retries": "extra replicas tried when a replica refuses or drops a connection",
    "retry_methods": "comma list of methods retried once bytes of the request reached a replica "
    "(upper-cased; default the idempotent GET,HEAD,OPTIONS; empty: none); a request that "
    "never reached one (connect failed) is retried whatever its method",
    "retry_on": "comma list of what is retried on the key's next replica: connect (refused or "
    "failed), reset (closed before any response byte), 5xx (any 500-599 answered by the "
    "replica, before anything was relayed), gateway-error (only 502/503/504, likewise); "
    "empty: no retries",
    "retry_timeout_s": "seconds from a request's start after which it gets no new attempt",
    "retry_budget": "retries in flight per process may not exceed max(3, this share of the "
    "requests in flight); beyond it the failure is answered (0..1)",
    "eject_consecutive": "outlier detection: failed requests in a row (connect errors, resets, "
    "timeouts) that eject a replica from this process's routing; 0 = off",
    "eject_on_5xx": "outlier detection also counts the eject_statuses answered by a replica: "
    "true (default) or false (none counts)",
    "eject_statuses": "statuses answered by a replica that count as failed requests: comma list "
    "of statuses and ranges within 500..599; default 500-599 (Envoy's consecutive_5xx), "
    "502-504 for gateway errors only",
    "base_ejection_s": "seconds of a replica's first ejection; the n-th lasts n times as long",
    "max_ejection_s": "upper bound of one ejection, in seconds",
    "max_ejection_share": "at most floor(this × members) replicas are ejected at once (0..1)",
    "runtime": "how replicas run: process (local processes on loopback) or docker (containers "
    "on --docker-network, through the Docker socket)",
    "docker_image": "image of the replica containers (runtime=docker)",
    "docker_network": "Docker network the replicas join; the balancer must be on it too",
    "docker_deployment": "label value and name prefix that mark this deployment's containers",
    "docker_timeout_s": "seconds any single Docker API call may take",
    "backends": "comma list of host:port backends that already run; replaces the runtime "
    "(replicas defaults to their number)",
    "replica_host": "loopback address replicas of the process runtime listen on",
    "replica_env": "comma list of environment variables the process runtime passes to its "
    "replicas besides PATH, HOME, the locale, TZ, TMPDIR and the PYTHON* search paths; never "
    "an LB_* setting (the balancer's secrets are among them)",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "workers": "data-path processes sharing the port (SO_REUSEPORT) and this instance's ring",
    "redis_url": "redis:// URL of the state shared by several instances (empty: this instance "
    "alone, state in memory)",
    "instance_id": "this instance's name in the shared state (default: <hostname>:<port>)",
    "leader_ttl_s": "seconds the leader lease lasts without renewal (renewed every third)",
    "redis_timeout_s": "seconds any single Redis call may take",
    "access_log_sample": "fraction of requests logged as JSON lines (logger balancer.access); "
    "0 = off",
    "admin_token": "bearer token the changes (POST /add, DELETE|POST /rm, PUT /lb/settings, PUT "
    "/lb/weight) require as 'Authorization: Bearer <token>'; reads stay open; empty = off (the "
    "contract's clients send none). A secret: pass it through LB_ADMIN_TOKEN or the file",
}


@dataclass(frozen=True)
class Settings:
    """Every knob of one balancer instance (see ``_HELP`` for each field's meaning)."""

    host: str = "127.0.0.1"
    port: int = 5555
    replicas: int = 3
    max_replicas: int = 64
    algorithm: Algorithm = "slots"
    hash_name: HashName = "xxh3"
    hash_seed: int = dataclasses.field(default=DEFAULT_SEED, repr=False)  # may be a secret
    points_per_weight: int = 160
    slots: int = 512
    vnodes: int | None = None
    probing: Probing = "linear"
    balance_factor: float = 0.0
    key_source: str = "query:id,header:x-request-id"
    heartbeat_interval_s: float = 0.5
    heartbeat_timeout_s: float = 0.5
    heartbeat_fails: int = 2
    heartbeat_rise: int = 2
    heartbeat_jitter: float = 0.1
    health_path: str = "/heartbeat"
    health_status: str = "200"
    replace_after_s: float = 0.0
    spawn_timeout_s: float = 10.0
    upstream_connect_timeout_s: float = 1.0
    upstream_timeout_s: float = 30.0
    upstream_total_timeout_s: float = 0.0
    client_timeout_s: float = 30.0
    client_idle_timeout_s: float = 60.0
    max_connections: int = 0
    header_timeout_s: float = 10.0
    retries: int = 2
    retry_methods: str = "GET,HEAD,OPTIONS"
    retry_on: str = "connect,reset"
    retry_timeout_s: float = 5.0
    retry_budget: float = 0.2
    eject_consecutive: int = 5
    eject_on_5xx: bool = True
    eject_statuses: str = "500-599"
    base_ejection_s: float = 2.0
    max_ejection_s: float = 30.0
    max_ejection_share: float = 0.5
    runtime: RuntimeName = "process"
    backends: str = ""
    replica_host: str = "127.0.0.1"
    replica_env: str = ""
    log_level: LogLevel = "INFO"
    workers: int = 1
    access_log_sample: float = 0.0
    redis_url: str = ""
    docker_image: str = "chlb-server:latest"
    docker_network: str = "net1"
    docker_deployment: str = "chlb"
    docker_timeout_s: float = 30.0
    instance_id: str = ""
    leader_ttl_s: float = 3.0
    redis_timeout_s: float = 1.0
    admin_token: str = dataclasses.field(default="", repr=False)  # a secret

    def __post_init__(self) -> None:
        for name in (
            "slots",
            "points_per_weight",
            "heartbeat_fails",
            "heartbeat_rise",
            "max_replicas",
            "workers",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in _SECONDS:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
        checks = [
            (0 <= self.port < 65536, "port must be in 0..65535"),
            (0 <= self.replicas <= self.max_replicas, "replicas must be in 0..max_replicas"),
            (self.vnodes is None or self.vnodes >= 1, "vnodes must be at least 1"),
            self._seed_check(),
            (
                not runs_on_public_seed(self.hash_name, self.hash_seed),
                f"{self.hash_name} needs a secret key: set LB_HASH_SEED (or hash_seed in the "
                f"--config file) to a random {SEED_BITS.get(self.hash_name, 64)}-bit value, e.g. "
                f"`{key_command(self.hash_name)}`; the default seed is in the source, so it "
                "is public",
            ),
            (
                self.balance_factor == 0.0 or 1.0 <= self.balance_factor < 100.0,
                "balance_factor must be 0 (off) or a factor in [1, 100): 1.25, not HAProxy's "
                "percentage 125",
            ),
            (self.retries >= 0, "retries must be at least 0"),
            (
                all(_TOKEN.fullmatch(m) for m in self.retry_method_set),
                "retry_methods must be a comma list of HTTP methods",
            ),
            (
                self.retry_on_set <= RETRY_CONDITIONS,
                f"retry_on must be a comma list of {', '.join(sorted(RETRY_CONDITIONS))}",
            ),
            (0.0 <= self.retry_budget <= 1.0, "retry_budget must be in [0, 1]"),
            (self.eject_consecutive >= 0, "eject_consecutive must be at least 0"),
            (
                self.max_ejection_s >= self.base_ejection_s,
                "max_ejection_s must be at least base_ejection_s",
            ),
            (0.0 <= self.max_ejection_share <= 1.0, "max_ejection_share must be in [0, 1]"),
            (0.0 <= self.heartbeat_jitter <= 0.5, "heartbeat_jitter must be in [0, 0.5]"),
            (
                _PATH.fullmatch(self.health_path) is not None,
                "health_path must start with / and be printable ASCII without spaces or #",
            ),
            (self.replace_after_s >= 0, "replace_after_s must be at least 0"),
            (self.upstream_total_timeout_s >= 0, "upstream_total_timeout_s must be at least 0"),
            (self.max_connections >= 0, "max_connections must be at least 0 (0: automatic)"),
            (0.0 <= self.access_log_sample <= 1.0, "access_log_sample must be in [0, 1]"),
            (
                all(_ENV_NAME.fullmatch(n) for n in self.replica_env_names),
                "replica_env must be a comma list of environment variable names",
            ),
            (
                not any(n.startswith("LB_") for n in self.replica_env_names),
                "replica_env may not name an LB_* variable: those are the balancer's settings, "
                "its secrets among them",
            ),
            (
                all("!" <= c <= "~" for c in self.admin_token),
                "admin_token must be printable ASCII without spaces",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        _ = self.eject_status_set, self.health_status_set  # raise ConfigError when malformed
        for backend in self.backend_list:
            host, _, port = backend.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"backend {backend!r} is not host:port")

    def _seed_check(self) -> tuple[bool, str]:
        # The message never shows the seed: with siphash it is a secret key.
        bits = SEED_BITS.get(self.hash_name, 64)
        return (
            0 <= self.hash_seed < 1 << bits,
            f"hash_seed must be in [0, 2**{bits}) for hash_name {self.hash_name}",
        )

    @property
    def retry_method_set(self) -> frozenset[str]:
        return frozenset(m.strip().upper() for m in self.retry_methods.split(",") if m.strip())

    @property
    def retry_on_set(self) -> frozenset[str]:
        return frozenset(c.strip().lower() for c in self.retry_on.split(",") if c.strip())

    @property
    def eject_status_set(self) -> frozenset[int]:
        return parse_statuses("eject_statuses", self.eject_statuses, 500, 599)

    @property
    def health_status_set(self) -> frozenset[int]:
        return parse_statuses("health_status", self.health_status, 200, 599)

    @property
    def replica_env_names(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.replica_env.split(",") if n.strip())

    @property
    def backend_list(self) -> list[str]:
        return [b.strip() for b in self.backends.split(",") if b.strip()]

    @property
    def ring(self) -> RingSettings:
        """The routing part of the settings, as the hashing core takes it."""
        vnodes = self.vnodes or max(1, int(math.log2(self.slots)))
        return RingSettings(
            algorithm=self.algorithm,
            hash_name=self.hash_name,
            hash_seed=self.hash_seed,
            points_per_weight=self.points_per_weight,
            slots=self.slots,
            vnodes=vnodes,
            probing=self.probing,
            balance_factor=self.balance_factor,
        )


_SECONDS = (
    "retry_timeout_s",
    "base_ejection_s",
    "max_ejection_s",
    "heartbeat_interval_s",
    "heartbeat_timeout_s",
    "spawn_timeout_s",
    "upstream_connect_timeout_s",
    "upstream_timeout_s",
    "client_timeout_s",
    "client_idle_timeout_s",
    "header_timeout_s",
    "leader_ttl_s",
    "redis_timeout_s",
    "docker_timeout_s",
)
RETRY_CONDITIONS = frozenset({"connect", "reset", "5xx", "gateway-error"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH = re.compile(r"/[!-\"$-~]*")  # goes into a request line: printable, no space, no fragment
_STATUSES = re.compile(r"([0-9]{3})(?:-([0-9]{3}))?")
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True}
_BOOLEANS.update({"false": False, "0": False, "no": False, "off": False})
_SECRETS = frozenset({"hash_seed", "admin_token"})  # never echoed in errors, not in repr(Settings)
_HINTS = typing.get_type_hints(Settings)
_FIELDS = [f.name for f in dataclasses.fields(Settings)]


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


def load_settings(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """Build ``Settings`` from a command line (without the program name) and an environment.

    Raises:
        ConfigError: on an unknown key in the file, or a value of the wrong type or range.
        SystemExit: on ``--help`` or a malformed command line (argparse's behaviour).
    """
    parser = _parser()
    args = parser.parse_args(list(argv))
    values: dict[str, Any] = {}
    config_path = args.config or env.get("LB_CONFIG")
    if config_path:
        values.update(_read_file(Path(config_path)))
    for name in _FIELDS:
        raw = env.get(f"LB_{name.upper()}")
        if raw is not None:
            values[name] = _coerce(name, raw)
    for name in _FIELDS:
        raw = getattr(args, name)
        if raw is not None:
            values[name] = _coerce(name, raw)
    return Settings(**values)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lb-balancer",
        description="Consistent-hashing HTTP load balancer. Every flag also reads LB_<FLAG>.",
    )
    parser.add_argument("--config", help="TOML file with any of the settings below")
    for name in _FIELDS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, help=_HELP.get(name))
    return parser


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown settings in {path}: {', '.join(unknown)}")
    return {name: _coerce(name, value) for name, value in data.items()}


def _coerce(name: str, raw: object) -> object:
    """Convert a string (env/flag) or TOML value to the field's declared type."""
    hint = _HINTS[name]
    options = typing.get_args(hint)
    if isinstance(hint, types.UnionType):  # ``int | None``: only the int part is settable
        hint = next(t for t in options if t is not type(None))
    if typing.get_origin(hint) is Literal:
        if raw not in options:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, options))}; got {raw!r}")
        return raw
    if hint is bool:
        return _boolean(name, raw)
    try:
        if hint is int:
            text = str(raw).strip()
            prefixed = text.lstrip("+-")[:2].lower() in ("0x", "0o", "0b")
            return int(text, 0) if prefixed else int(text)
        if hint is float:
            return float(str(raw))
    except ValueError as exc:
        if name in _SECRETS:  # neither the message nor the chained error may show it
            raise ConfigError(f"{name} must be a {hint.__name__}") from None
        raise ConfigError(f"{name} must be a {hint.__name__}; got {raw!r}") from exc
    return str(raw)


def _boolean(name: str, raw: object) -> bool:
    if isinstance(raw, bool):  # TOML true/false
        return raw
    value = _BOOLEANS.get(str(raw).strip().lower())
    if value is None:
        raise ConfigError(f"{name} must be true or false; got {raw!r}")
    return value

"""The data path's sections of the settings: listening and timeouts, retries, ejection.

Owns ``HttpSettings``, ``RetrySettings`` and ``EjectionSettings`` (declared and checked as
``balancer.sections`` describes); ``balancer.http.frontend`` builds the data path's
``Timeouts``, ``RetryPolicy`` and ``EjectionPolicy`` from them.
Must not import: asyncio, aiohttp, redis, docker, or project modules other than
``balancer.setting``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from balancer.setting import (
    at_least_one,
    check,
    comma_list,
    derived,
    parse_statuses,
    positive,
    setting,
)

RETRY_CONDITIONS = frozenset({"connect", "reset", "5xx", "gateway-error"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2


@dataclass(frozen=True)
class HttpSettings:
    """The data path: where it listens, how keys are read, how long each state may last."""

    host: str = setting("127.0.0.1", "host", "address the balancer listens on")
    port: int = setting(5555, "port", "port the balancer listens on")
    workers: int = setting(
        1, "workers", "data-path processes sharing the port (SO_REUSEPORT) and this instance's ring"
    )
    max_connections: int = setting(
        0,
        "max_connections",
        "most client connections one process holds (HAProxy's maxconn); 0 = what the descriptor "
        "limit allows, raised to its hard maximum at start: (limit - 256) / 2; past it a new "
        "connection is closed at once",
    )
    key_source: str = setting(
        "query:id,header:x-request-id",
        "key_source",
        "comma list tried in order: query:<name>, header:<name>, cookie:<name>, ip, path; no "
        "match → a random 6-digit id",
    )
    header_timeout_s: float = setting(
        10.0, "header_timeout_s", "seconds a client has to send a complete request head (else 408)"
    )
    client_timeout_s: float = setting(
        30.0,
        "client_timeout_s",
        "seconds without progress while the balancer waits for the client: request body bytes "
        "that do not arrive (408), a response it does not read, the rest of a body after an "
        "early answer (HAProxy's timeout client)",
    )
    client_idle_timeout_s: float = setting(
        60.0, "client_idle_timeout_s", "seconds an idle keep-alive client connection stays open"
    )
    upstream_connect_timeout_s: float = setting(
        1.0, "upstream_connect_timeout_s", "seconds to connect to a replica"
    )
    upstream_timeout_s: float = setting(
        30.0,
        "upstream_timeout_s",
        "seconds without a byte to or from a replica while it owes an answer (HAProxy's timeout "
        "server: an inactivity timeout, so long uploads and downloads that progress are not "
        "cut): 504, or a reset of a response already under way",
    )
    upstream_total_timeout_s: float = setting(
        0.0,
        "upstream_total_timeout_s",
        "seconds from sending a request to a replica to its complete answer, whatever the "
        "progress (0 = no bound)",
    )
    access_log_sample: float = setting(
        0.0,
        "access_log_sample",
        "fraction of requests logged as JSON lines (logger balancer.access); 0 = off",
    )

    def __post_init__(self) -> None:
        check(
            [
                *at_least_one(self, "workers"),
                *positive(
                    self,
                    "header_timeout_s",
                    "client_timeout_s",
                    "client_idle_timeout_s",
                    "upstream_connect_timeout_s",
                    "upstream_timeout_s",
                ),
                (0 <= self.port < 65536, "port must be in 0..65535"),
                (
                    self.upstream_total_timeout_s >= 0,
                    "upstream_total_timeout_s must be at least 0",
                ),
                (self.max_connections >= 0, "max_connections must be at least 0 (0: automatic)"),
                (0.0 <= self.access_log_sample <= 1.0, "access_log_sample must be in [0, 1]"),
            ]
        )


@dataclass(frozen=True)
class RetrySettings:
    """Which failed requests go to the key's next replica, and how many."""

    retries: int = setting(
        2, "retries", "extra replicas tried when a replica refuses or drops a connection"
    )
    methods: str = setting(
        "GET,HEAD,OPTIONS",
        "retry_methods",
        "comma list of methods retried once bytes of the request reached a replica "
        "(upper-cased; default the idempotent GET,HEAD,OPTIONS; empty: none); a request that "
        "never reached one (connect failed) is retried whatever its method",
    )
    on: str = setting(
        "connect,reset",
        "retry_on",
        "comma list of what is retried on the key's next replica: connect (refused or failed), "
        "reset (closed before any response byte), 5xx (any 500-599 answered by the replica, "
        "before anything was relayed), gateway-error (only 502/503/504, likewise); empty: no "
        "retries",
    )
    timeout_s: float = setting(
        5.0, "retry_timeout_s", "seconds from a request's start after which it gets no new attempt"
    )
    budget: float = setting(
        0.2,
        "retry_budget",
        "retries in flight per process may not exceed max(3, this share of the requests in "
        "flight); beyond it the failure is answered (0..1)",
    )

    def __post_init__(self) -> None:
        check(
            [
                *positive(self, "timeout_s"),
                (self.retries >= 0, "retries must be at least 0"),
                (
                    all(_TOKEN.fullmatch(m) for m in self.method_set),
                    "retry_methods must be a comma list of HTTP methods",
                ),
                (
                    self.on_set <= RETRY_CONDITIONS,
                    f"retry_on must be a comma list of {', '.join(sorted(RETRY_CONDITIONS))}",
                ),
                (0.0 <= self.budget <= 1.0, "retry_budget must be in [0, 1]"),
            ]
        )

    @property
    def method_set(self) -> frozenset[str]:
        return frozenset(m.upper() for m in comma_list(self.methods))

    @property
    def on_set(self) -> frozenset[str]:
        return frozenset(c.lower() for c in comma_list(self.on))


@dataclass(frozen=True)
class EjectionSettings:
    """Outlier detection: replicas this process stops routing to for a while."""

    consecutive: int = setting(
        5,
        "eject_consecutive",
        "outlier detection: failed requests in a row (connect errors, resets, timeouts) that "
        "eject a replica from this process's routing; 0 = off",
    )
    on_5xx: bool = setting(
        True,
        "eject_on_5xx",
        "outlier detection also counts the eject_statuses answered by a replica: true (default) "
        "or false (none counts)",
    )
    statuses: str = setting(
        "500-599",
        "eject_statuses",
        "statuses answered by a replica that count as failed requests: comma list of statuses "
        "and ranges within 500..599; default 500-599 (Envoy's consecutive_5xx), 502-504 for "
        "gateway errors only",
    )
    base_s: float = setting(
        2.0,
        "base_ejection_s",
        "seconds of a replica's first ejection; the n-th lasts n times as long",
    )
    max_s: float = setting(30.0, "max_ejection_s", "upper bound of one ejection, in seconds")
    max_share: float = setting(
        0.5,
        "max_ejection_share",
        "at most floor(this × members) replicas are ejected at once (0..1)",
    )
    status_set: frozenset[int] = derived()

    def __post_init__(self) -> None:
        check(
            [
                *positive(self, "base_s", "max_s"),
                (self.consecutive >= 0, "eject_consecutive must be at least 0"),
                (self.max_s >= self.base_s, "max_ejection_s must be at least base_ejection_s"),
                (0.0 <= self.max_share <= 1.0, "max_ejection_share must be in [0, 1]"),
            ]
        )
        statuses = parse_statuses("eject_statuses", self.statuses, 500, 599)
        object.__setattr__(self, "status_set", statuses)

"""Replicas another system runs, found by DNS: ``--runtime dns``.

Owns ``DnsRuntime``, ``Answer``, ``dns_lookup`` (dnspython's asyncio resolver), ``replica_name``
and the ``DnsSettings`` section. The ring follows what a DNS name resolves to: A and AAAA
records (Swarm's ``tasks.<service>``, a Kubernetes headless Service) with one port for all
(``--dns-port``), or SRV records (each target's port, then the target's A/AAAA records).

Polling: ``watch`` (run by the leader's reconciler for its term) looks the name up again at
``min(interval, max(ttl, 1 s))`` after each answer, where ``ttl`` is the smallest TTL of the
records used, and calls its callback when the set of addresses changes. Every lookup has a
timeout. A lookup that fails (timeout, SERVFAIL, no nameserver answering) keeps the last answer
and is retried sooner: a DNS hiccup never empties the ring. NXDOMAIN and an answer without
records are real answers: the name has no replicas now, so the ring empties (the balancer
answers 503 until replicas are back), once a second lookup a poll later confirms it (a headless
Service answers NXDOMAIN while no pod is ready: one readiness flap must not empty the ring).
Until a first answer arrives ``list`` raises ``RuntimeFailure`` (the reconciler retries; it
never takes "no answer yet" for "no replicas").

A hostile or broken answer is bounded: at most ``MAX_ADDRESSES`` addresses (the rest are
ignored, with a warning), at most ``MAX_SRV_TARGETS`` SRV targets looked up; unspecified,
multicast and scoped addresses, IPv6 addresses that embed an IPv4 one (``::ffff:127.0.0.1``
reaches loopback), SRV port 0 and the SRV "." target are dropped. An answer is
trusted no further than ``--dns-allow`` says: by default loopback and link-local addresses are
dropped too, so a poisoned answer cannot turn the balancer into a proxy to itself, to a service
on its own host, or to a cloud metadata endpoint (169.254.169.254); a deployment that knows its
replicas' network lists it (``--dns-allow 10.0.0.0/8``) and every other address is dropped.

Names: a replica is named after its address, ``<ip>_<port>`` (``10.0.1.5_5000``; an IPv6
address in compressed form with ``:`` written ``-``: ``fd00--1_5000``), so its name, and the
ring points hashed from it, stay put while its address stays.

Where it departs from the runtime contract (``tests/runtimes``): it cannot start or stop
replicas. ``spawn`` raises ``RuntimeFailure`` saying which system manages them; ``stop``,
``release`` and ``close`` leave the replicas and the answer as they are; ``list`` is the last
answer (whoever runs the replicas); ``adopt`` is True for a handle whose name is in it. The
locator is the replica's address; ``describe`` shows nothing. The control plane never spawns
with this runtime (``balancer.control.plan``, ``Policy.discovered``).
Must not import: aiohttp, redis, docker (dnspython is imported only inside the lookup functions).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from balancer.errors import ConfigError, RuntimeFailure
from balancer.runtimes.base import Description, ReplicaHandle
from balancer.setting import check, positive, setting

log = logging.getLogger(__name__)

MAX_ADDRESSES = 256  # of one answer; more are ignored
MAX_SRV_TARGETS = 64  # SRV targets whose addresses are looked up
MIN_POLL_S = 1.0  # a TTL of 0 does not turn polling into a busy loop
LOOKUP_TIMEOUT_S = 2.0  # one lookup, every query of it included

Record = Literal["a", "srv"]
Clock = Callable[[], float]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# What an answer may not name unless --dns-allow lists it: the balancer's own host, link-local
# neighbours and the metadata endpoints clouds serve there.
NEVER_BY_DEFAULT: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10")
)
# IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo): the kernel
# or a gateway may deliver them to that IPv4 address (::ffff:127.0.0.1 reaches loopback), so an
# answer naming one could reach what the checks above forbid. A replica has a plain address.
EMBEDS_IPV4: tuple[ipaddress.IPv6Network, ...] = tuple(
    ipaddress.IPv6Network(n)
    for n in ("::ffff:0:0/96", "::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32")
)


class LookupFailed(RuntimeFailure):
    """The lookup got no answer (timeout, SERVFAIL, no nameserver): keep the last one."""


@dataclass(frozen=True)
class Answer:
    """What the name resolves to now: ``host:port`` addresses and the smallest TTL used."""

    addresses: tuple[str, ...]
    ttl_s: float


Lookup = Callable[[], Awaitable[Answer]]


def replica_name(address: str) -> str:
    """The stable replica name of ``host:port`` (``10.0.1.5_5000``, ``fd00--1_5000``)."""
    host, _, port = address.rpartition(":")
    return f"{host.strip('[]').replace(':', '-')}_{port}"


def endpoint(host: str, port: int, allow: Sequence[Network] = ()) -> str | None:
    """``host:port`` in canonical form (IPv6 in brackets), or None for an address or port a
    replica cannot have (unspecified, multicast, scoped, port outside 1..65535) and for an
    address outside ``allow`` (empty: any but ``NEVER_BY_DEFAULT``)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.is_unspecified or ip.is_multicast or not 0 < port < 65536:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in EMBEDS_IPV4):
        return None
    if not permitted(ip, allow):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return None if ip.scope_id else f"[{ip.compressed}]:{port}"
    return f"{ip}:{port}"


def permitted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow: Sequence[Network]) -> bool:
    """Whether an answer may name ``ip``: inside one of ``allow``, or (``allow`` empty) outside
    every ``NEVER_BY_DEFAULT`` network."""
    if allow:
        return any(ip in net for net in allow)
    return not any(ip in net for net in NEVER_BY_DEFAULT)


def parse_allow(text: str) -> tuple[Network, ...]:
    """``--dns-allow``'s comma-separated CIDRs.

    Raises:
        ValueError: an entry that is not a network (host bits set included).
    """
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def bounded(name: str, addresses: Iterable[str]) -> tuple[str, ...]:
    """Sorted, deduplicated and at most ``MAX_ADDRESSES`` of them."""
    unique = sorted(set(addresses))
    if len(unique) > MAX_ADDRESSES:
        log.warning("%s: %d addresses; using %d", name, len(unique), MAX_ADDRESSES)
    return tuple(unique[:MAX_ADDRESSES])


class DnsRuntime:
    """The replicas a DNS name resolves to (see the module docstring)."""

    def __init__(
        self,
        name: str,
        lookup: Lookup,
        *,
        interval_s: float = 5.0,
        timeout_s: float = LOOKUP_TIMEOUT_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.managed_by = f"DNS name {name}"
        self._name = name
        self._lookup = lookup
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._answer: Answer | None = None
        self._next_at = 0.0  # when the answer is due for a new lookup
        self._failures = 0
        self._empty_seen = False  # an empty answer after addresses, not yet confirmed
        self._lock = asyncio.Lock()

    async def spawn(self, name: str, server_id: str) -> ReplicaHandle:
        raise RuntimeFailure(
            f"replicas are discovered from {self.managed_by}; this balancer cannot start them"
        )

    async def stop(self, name: str, *, force: bool = False) -> None:
        """Nothing to stop: the system that runs the replica decides."""

    async def adopt(self, handle: ReplicaHandle) -> bool:
        return handle.name in {h.name for h in await self.list()}

    async def list(self) -> list[ReplicaHandle]:
        """The last answer, looked up again first if it is due.

        Raises:
            RuntimeFailure: no lookup has answered yet.
        """
        if self._clock() >= self._next_at:
            await self.refresh()
        if self._answer is None:
            raise RuntimeFailure(f"{self.managed_by} has not answered yet")
        return [_handle(address) for address in self._answer.addresses]

    def describe(self, handle: ReplicaHandle) -> Description:
        return {}

    async def release(self) -> None:
        """Nothing is tracked beyond the answer."""

    async def close(self) -> None:
        """Nothing runs here (``watch`` belongs to its caller's task)."""

    async def watch(self, on_change: Callable[[], None]) -> None:
        """Look the name up whenever the answer is due; ``on_change()`` after each change of
        the addresses. Runs until cancelled."""
        while True:
            try:
                if await self.refresh():
                    on_change()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in a lookup must not end the leader's term
                log.exception("%s: lookup failed unexpectedly", self._name)
                self._next_at = self._clock() + self._interval_s
            await asyncio.sleep(max(0.0, self._next_at - self._clock()))

    async def refresh(self) -> bool:
        """One lookup (unless another just ran). Returns True when the addresses changed."""
        async with self._lock:
            if self._clock() < self._next_at:
                return False
            before = self._answer
            try:
                async with asyncio.timeout(self._timeout_s):
                    answer = await self._lookup()
            except (LookupFailed, TimeoutError) as exc:
                self._failures += 1
                delay_s = min(self._interval_s, MIN_POLL_S * 2 ** min(self._failures - 1, 5))
                self._next_at = self._clock() + delay_s
                log.warning("%s: lookup failed (%s); keeping the last answer", self._name, exc)
                return False
            self._failures = 0
            if self._unconfirmed_empty(before, answer):
                return False
            self._answer = answer
            self._next_at = self._clock() + self.poll_s(answer.ttl_s)
            changed = before is None or before.addresses != answer.addresses
            if changed:
                log.info("%s: %s", self._name, ", ".join(answer.addresses) or "no addresses")
            return changed

    def _unconfirmed_empty(self, before: Answer | None, answer: Answer) -> bool:
        """True for the first empty answer after addresses (it is asked again a poll later): a
        headless Service answers NXDOMAIN the moment no pod is ready, and one readiness flap
        under load must not empty the ring. A second empty answer in a row is taken."""
        if answer.addresses or before is None or not before.addresses:
            self._empty_seen = False
            return False
        if self._empty_seen:
            self._empty_seen = False
            return False
        self._empty_seen = True
        self._next_at = self._clock() + self.poll_s(0.0)
        log.warning("%s: no addresses; asking again before emptying the ring", self._name)
        return True

    def poll_s(self, ttl_s: float) -> float:
        """How long an answer with ``ttl_s`` is used: the TTL, within [1 s, interval]."""
        return min(self._interval_s, max(ttl_s, MIN_POLL_S))


def _handle(address: str) -> ReplicaHandle:
    name = replica_name(address)
    return ReplicaHandle(name, name, address, address)


# -- dnspython: the lookup --------------------------------------------------------------------


def dns_lookup(
    name: str, record: Record, *, port: int, server: str = "", allow: Sequence[Network] = ()
) -> Lookup:
    """A lookup of ``name`` with dnspython's asyncio resolver (``server``: ``host:port``,
    else the system's ``resolv.conf``); addresses outside ``allow`` are dropped (see
    ``endpoint``)."""
    import dns.asyncresolver

    resolver = dns.asyncresolver.Resolver(configure=not server)
    if server:
        host, _, server_port = server.rpartition(":")
        resolver.nameservers = [host.strip("[]")]
        resolver.port = int(server_port)
    resolver.cache = None  # every poll asks: the TTL schedule is ours
    resolver.lifetime = LOOKUP_TIMEOUT_S

    async def lookup() -> Answer:
        if record == "srv":
            return await _srv(resolver, name, allow)
        found, ttl_s = await _addresses(resolver, name, port, allow)
        return Answer(bounded(name, found), ttl_s)

    return lookup


async def _query(resolver: Any, name: str, rdtype: str) -> tuple[list[Any], float]:
    """The records of one query and their TTL; ([], inf) for NXDOMAIN or no such records."""
    import dns.exception
    import dns.resolver

    try:
        answer = await resolver.resolve(name, rdtype, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return [], float("inf")
    except dns.exception.DNSException as exc:
        raise LookupFailed(f"{rdtype} {name}: {exc}") from exc
    return list(answer), float(answer.rrset.ttl)


async def _addresses(
    resolver: Any, name: str, port: int, allow: Sequence[Network]
) -> tuple[list[str], float]:
    """The A and AAAA addresses of ``name`` with ``port`` that ``allow`` permits, and their
    smallest TTL."""
    (a, a_ttl), (aaaa, aaaa_ttl) = await asyncio.gather(
        _query(resolver, name, "A"), _query(resolver, name, "AAAA")
    )
    found = [endpoint(rr.address, port, allow) for rr in [*a, *aaaa]]
    return [f for f in found if f is not None], min(a_ttl, aaaa_ttl)


async def _srv(resolver: Any, name: str, allow: Sequence[Network]) -> Answer:
    """SRV targets and ports, then each target's addresses (a target that fails to resolve
    fails the lookup: a partial answer would evict its replicas)."""
    records, ttl_s = await _query(resolver, name, "SRV")
    targets = sorted({(str(rr.target), int(rr.port)) for rr in records if str(rr.target) != "."})
    if len(targets) > MAX_SRV_TARGETS:
        log.warning("%s: %d SRV targets; using %d", name, len(targets), MAX_SRV_TARGETS)
    resolved = await asyncio.gather(
        *(_addresses(resolver, target, port, allow) for target, port in targets[:MAX_SRV_TARGETS])
    )
    found = [address for addresses, _ in resolved for address in addresses]
    return Answer(bounded(name, found), min([ttl_s, *(t for _, t in resolved)]))


# -- configuration: the section and factory balancer.runtimes.registry names ------------------


@dataclass(frozen=True)
class DnsSettings:
    """Replicas another system runs, found by DNS (--runtime dns)."""

    name: str = setting(
        "",
        "dns_name",
        "DNS name whose records are the replicas (tasks.web, a headless Service's name, or an "
        "SRV name such as _http._tcp.web.chlb.svc.cluster.local)",
    )
    record: str = setting("a", "dns_record", "a (A and AAAA records, with --dns-port) or srv")
    port: int = setting(5000, "dns_port", "port of the replicas of an A/AAAA answer")
    interval_s: float = setting(
        5.0,
        "dns_interval_s",
        "longest time between two lookups; a shorter TTL looks up sooner (not below 1 s)",
    )
    server: str = setting(
        "", "dns_server", "ip:port of the nameserver to ask; empty: the system's resolv.conf"
    )
    allow: str = setting(
        "",
        "dns_allow",
        "comma-separated networks (CIDR) the answer's addresses must be in, e.g. 10.0.0.0/8; "
        "others are dropped. Empty: any address but loopback and link-local (169.254.0.0/16, "
        "where clouds serve instance metadata)",
    )

    def __post_init__(self) -> None:
        host, _, server_port = self.server.rpartition(":")
        check(
            [
                (self.record in ("a", "srv"), "dns_record must be a or srv"),
                (0 < self.port < 65536, "dns_port must be a port (1..65535)"),
                *positive(self, "interval_s"),
                (
                    not self.server or (_is_ip(host.strip("[]")) and server_port.isdigit()),
                    "dns_server must be ip:port (an IPv6 address in brackets)",
                ),
                (_networks(self.allow), "dns_allow must be comma-separated networks (CIDR)"),
            ]
        )


def _networks(text: str) -> bool:
    try:
        parse_allow(text)
    except ValueError:
        return False
    return True


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def dns_runtime(settings: DnsSettings) -> DnsRuntime:
    """The registry's factory.

    Raises:
        ConfigError: no ``dns_name``.
    """
    if not settings.name:
        raise ConfigError("--runtime dns needs dns_name (--dns-name or LB_DNS_NAME)")
    record: Record = "srv" if settings.record == "srv" else "a"
    lookup = dns_lookup(
        settings.name,
        record,
        port=settings.port,
        server=settings.server,
        allow=parse_allow(settings.allow),
    )
    return DnsRuntime(settings.name, lookup, interval_s=settings.interval_s)

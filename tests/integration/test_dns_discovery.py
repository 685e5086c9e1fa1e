"""Discovery against a real DNS server: ``lb-balancer --runtime dns`` follows what dnsmasq answers.

Real processes: dnsmasq (``tests/support/dns_server.py``), ``python -m server`` replicas on
distinct loopback addresses (127.0.0.11…16) and one port, so A records carry them, and one
``python -m balancer --runtime dns`` (``tests/support/balancer_process.py``). A steady, bounded
GET load (a few workers over a fixed set of keys) runs while the answer goes 3 → 5 → 2
addresses; the replicas dropped from the answer are killed once the ring has left them (a
scale-down that deregisters first). The health checks, not DNS, handle a replica killed while
still listed (``tests/unit/test_reconciler_discovered.py``).

Checked at each change: the ring (``GET /rep``) follows within interval + TTL (measured, printed
with ``-s``); a key whose replica stayed in the answer is never served by another replica, and
none of its GETs fails; when replicas join, a key moves only to a new replica. An SRV case:
targets and ports from SRV records, a target's new address followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from balancer.control.health import wait_ready
from balancer.runtimes.dns import replica_name
from tests.support.balancer_process import BalancerProcess
from tests.support.dns_server import Dnsmasq
from tests.support.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

INTERVAL_S = 2.0  # --dns-interval-s
TTL_S = 1  # dnsmasq --local-ttl
KEYS = [f"k{i}" for i in range(48)]
WORKERS = 4
# ``GET /rep`` reads the store, which the data path's ring follows a moment later (the ring is
# rebuilt in a thread after the change hint): the keys are checked as steady only over the last
# STEADY_S of a SETTLE_S pause after /rep converged, never over the moment of the swap itself.
SETTLE_S = 1.5
STEADY_S = 0.8


class Replicas:
    """``python -m server`` processes by address, answering as ``r<last octet>``."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, host: str, port: int) -> str:
        address = f"{host}:{port}"
        self.procs[address] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "--id",
                ident(address),
                "--host",
                host,
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return address

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as session:
            for address in self.procs:
                await wait_ready(session, address, 15.0)

    def kill(self, address: str) -> None:
        proc = self.procs[address]
        proc.kill()
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def ident(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"r{host.rpartition('.')[2]}-{port}"


@dataclass
class Load:
    """GET /home?id=<key> in a loop by a few workers; every answer as (time, key, who|None)."""

    url: str
    seen: list[tuple[float, str, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # why each failed GET failed

    async def run(self, worker: int) -> None:
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            i = worker
            while True:
                key = KEYS[i % len(KEYS)]
                i += WORKERS
                self.seen.append((time.monotonic(), key, await self._get(session, key)))
                await asyncio.sleep(0.005)

    async def _get(self, session: aiohttp.ClientSession, key: str) -> str | None:
        try:
            async with session.get(f"{self.url}/home?id={key}") as resp:
                if resp.status != 200:
                    self.errors.append(f"{key}: {resp.status} {await resp.text()}")
                    return None
                message = (await resp.json())["message"]
                return str(message).removeprefix("Hello from Server: ")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors.append(f"{key}: {exc!r}")
            return None

    def owners(self, start: float, end: float) -> dict[str, set[str | None]]:
        found: dict[str, set[str | None]] = {}
        for t, key, who in self.seen:
            if start <= t < end:
                found.setdefault(key, set()).add(who)
        return found


@contextlib.asynccontextmanager
async def loaded(url: str) -> AsyncIterator[Load]:
    load = Load(url)
    tasks = [asyncio.create_task(load.run(w)) for w in range(WORKERS)]
    try:
        yield load
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def ring(session: aiohttp.ClientSession, url: str) -> list[str]:
    async with session.get(f"{url}/rep") as resp:
        return sorted((await resp.json())["message"]["replicas"])


async def converged(url: str, addresses: list[str], timeout_s: float = 15.0) -> float:
    """Seconds until ``GET /rep`` lists exactly ``addresses``."""
    want = sorted(replica_name(a) for a in addresses)
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while await ring(session, url) != want:
            if time.monotonic() - started > timeout_s:
                pytest.fail(f"ring {await ring(session, url)} never became {want}")
            await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
def replicas() -> Iterator[Replicas]:
    made = Replicas()
    yield made
    made.stop_all()


@contextlib.contextmanager
def dnsmasq(tmp_path: Path, srv: Sequence[tuple[str, str, int]] = ()) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path, ttl_s=TTL_S, srv=srv)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def balancer(tmp_path: Path, dns: Dnsmasq, *args: str) -> Iterator[BalancerProcess]:
    lb = BalancerProcess(
        tmp_path / "balancer.log",
        "--runtime",
        "dns",
        "--dns-server",
        dns.server,
        "--dns-interval-s",
        str(INTERVAL_S),
        "--dns-allow",
        "127.0.0.0/8",  # the replicas are on loopback, which an answer may not name by default
        "--heartbeat-interval-s",
        "0.2",
        *args,
    )
    try:
        lb.wait_listening()
        yield lb
    finally:
        lb.stop()


def check_moves(
    load: Load,
    before: tuple[float, float],
    after: tuple[float, float],
    stayed: AbstractSet[str],
    new: AbstractSet[str] = frozenset(),
) -> tuple[int, int]:
    """Keys owned by a replica that stayed: never served by another one except a new replica
    (an addition takes its share), never failed. Returns (keys checked, GETs that failed for
    keys of replicas that left)."""
    owners_before = load.owners(*before)
    during = load.owners(before[1], after[1])
    checked = 0
    for key, owners in owners_before.items():
        (owner,) = owners  # steady before the change: one replica per key, no failure
        assert owner is not None
        if owner in stayed:
            assert during[key] <= {owner} | new, (key, owner, during[key])
            assert None not in during[key], f"a GET of {key} (on {owner}, which stayed) failed"
            checked += 1
    failed_moved = sum(1 for t, key, who in load.seen if before[1] <= t < after[1] and who is None)
    return checked, failed_moved


async def test_the_ring_follows_the_a_records_3_5_2_under_load(
    tmp_path: Path, replicas: Replicas
) -> None:
    port = free_port()
    addresses = [replicas.start(f"127.0.0.{i}", port) for i in range(11, 16)]
    await replicas.ready()
    with dnsmasq(tmp_path) as dns:
        dns.set_hosts({"tasks.web": [a.partition(":")[0] for a in addresses[:3]]})
        with balancer(tmp_path, dns, "--dns-name", "tasks.web", "--dns-port", str(port)) as lb:
            await converged(lb.url, addresses[:3])
            async with loaded(lb.url) as load:
                await asyncio.sleep(1.5)
                times = []
                previous = set(addresses[:3])
                for answer, killed in (
                    (addresses[:5], []),
                    ([addresses[0], addresses[3]], [addresses[1], addresses[2], addresses[4]]),
                ):
                    changed = time.monotonic()
                    before_start = changed - STEADY_S
                    dns.set_hosts({"tasks.web": [a.partition(":")[0] for a in answer]})
                    took = await converged(lb.url, answer)
                    times.append(took)
                    for address in killed:  # scaled down: out of DNS, then out of the ring
                        replicas.kill(address)
                    await asyncio.sleep(SETTLE_S)  # keys settle on the new ring
                    stayed = {ident(a) for a in set(answer) & previous}
                    new = {ident(a) for a in set(answer) - previous}
                    previous = set(answer)
                    checked, failed = check_moves(
                        load, (before_start, changed), (changed, time.monotonic()), stayed, new
                    )
                    assert checked > 0
                    print(
                        f"\nA records → {len(answer)}: ring followed in {took:.2f}s "
                        f"(bound {INTERVAL_S + TTL_S:.0f}s); {checked} keys of replicas that "
                        f"stayed never moved (but to a new replica) and never failed; {failed} "
                        f"failed GETs of keys whose replica left {load.errors}"
                    )
                    assert took <= INTERVAL_S + TTL_S, took
                    assert failed == 0, load.errors
    print(f"convergence: {', '.join(f'{t:.2f}s' for t in times)}")


async def test_srv_targets_and_ports_and_a_target_that_moves(
    tmp_path: Path, replicas: Replicas
) -> None:
    ports = [free_port(), free_port()]
    first = replicas.start("127.0.0.21", ports[0])
    second = replicas.start("127.0.0.22", ports[1])
    moved = replicas.start("127.0.0.23", ports[1])
    await replicas.ready()
    srv = [("_http._tcp.web", "a.web", ports[0]), ("_http._tcp.web", "b.web", ports[1])]
    with dnsmasq(tmp_path, srv=srv) as dns:
        dns.set_hosts({"a.web": ["127.0.0.21"], "b.web": ["127.0.0.22"]})
        args = ("--dns-name", "_http._tcp.web", "--dns-record", "srv")
        with balancer(tmp_path, dns, *args) as lb:
            await converged(lb.url, [first, second])
            async with loaded(lb.url) as load:
                await asyncio.sleep(1.0)
                changed = time.monotonic()
                dns.set_hosts({"a.web": ["127.0.0.21"], "b.web": ["127.0.0.23"]})
                took = await converged(lb.url, [first, moved])
                await asyncio.sleep(SETTLE_S)
                checked, _ = check_moves(
                    load, (changed - STEADY_S, changed), (changed, time.monotonic()), {ident(first)}
                )
                assert checked > 0
    print(f"\nSRV target b.web moved: ring followed in {took:.2f}s")
    assert took <= INTERVAL_S + TTL_S, took

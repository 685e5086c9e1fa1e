"""The DNS runtime's part of the runtime contract, and its lookup schedule.

``DnsRuntime`` lists what a name resolves to and starts nothing (``dns_harness``): here are the
contract's checks it can pass, in the form it has them, then the poll schedule (TTL within
[1 s, interval], with an injected clock), a failed lookup keeping the last answer, the bounds on
a hostile answer, the stable names and the settings. The real resolver runs against dnsmasq in
``tests/integration/test_dns_discovery.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from balancer.api.openapi import spec
from balancer.errors import ConfigError, RuntimeFailure
from balancer.runtimes.dns import (
    MAX_ADDRESSES,
    Answer,
    DnsRuntime,
    DnsSettings,
    bounded,
    dns_runtime,
    endpoint,
    parse_allow,
    replica_name,
)
from balancer.runtimes.registry import RUNTIMES
from tests.conftest import eventually
from tests.runtimes.dns_harness import DnsHarness
from tests.runtimes.test_runtime_contract import ROUND_TRIPS, answers, home
from tests.support.dns_fake import FakeDns


@pytest.fixture
async def dns_harness() -> AsyncIterator[DnsHarness]:
    made = DnsHarness()
    yield made
    await made.close()


# --- the contract, in the form this runtime has it ----------------------------------------------


async def test_list_is_the_answer_and_each_listed_replica_answers_home(
    dns_harness: DnsHarness,
) -> None:
    runtime = dns_harness.new_runtime()
    addresses = await dns_harness.publish("A", "B")
    listed = await runtime.list()
    assert sorted(h.address for h in listed) == sorted(addresses)
    for handle in listed:
        assert handle.name == handle.server_id == replica_name(handle.address)
        assert handle.locator == handle.address
        assert await home(handle) == {
            "message": f"Hello from Server: {dns_harness.home_id(handle)}",
            "status": "successful",
        }


async def test_spawn_refuses_and_names_the_system_that_runs_the_replicas(
    dns_harness: DnsHarness,
) -> None:
    runtime = dns_harness.new_runtime()
    await dns_harness.publish("A")
    with pytest.raises(RuntimeFailure, match=r"discovered from DNS name tasks\.web"):
        await runtime.spawn("Server 1", "1")
    assert len(await runtime.list()) == 1


async def test_stop_release_and_close_leave_replicas_and_the_answer(
    dns_harness: DnsHarness,
) -> None:
    runtime = dns_harness.new_runtime()
    await dns_harness.publish("A", "B")
    first, second = await runtime.list()
    await runtime.stop(first.name, force=True)
    await runtime.stop("nobody")
    await runtime.release()
    await runtime.close()
    assert await runtime.list() == [first, second]
    for handle in (first, second):
        assert await dns_harness.runs(handle) and await answers(handle)


async def test_adopt_is_true_for_a_listed_name_only(dns_harness: DnsHarness) -> None:
    before = dns_harness.new_runtime()
    await dns_harness.publish("A", "B")
    kept, dropped = await before.list()
    dns_harness.dns.addresses.remove(dropped.address)
    after = dns_harness.new_runtime()  # the balancer after a restart
    assert await after.adopt(kept) is True
    assert await after.adopt(dropped) is False


async def test_a_replica_that_dies_stays_listed_while_dns_lists_it(
    dns_harness: DnsHarness,
) -> None:
    runtime = dns_harness.new_runtime()
    await dns_harness.publish("A", "B")
    kept, dying = await runtime.list()
    await dns_harness.kill(dying)
    assert not await answers(dying)
    assert await runtime.list() == [kept, dying]  # the health checks keep it out of the ring


@pytest.mark.parametrize("store_kind", list(ROUND_TRIPS))
async def test_a_handle_survives_a_store_round_trip(
    dns_harness: DnsHarness, store_kind: str
) -> None:
    runtime = dns_harness.new_runtime()
    await dns_harness.publish("A")
    (handle,) = await runtime.list()
    read = await ROUND_TRIPS[store_kind](handle)
    assert read == handle
    assert await dns_harness.new_runtime().adopt(read) is True


async def test_describe_shows_nothing_the_status_schema_lacks(dns_harness: DnsHarness) -> None:
    runtime = dns_harness.new_runtime()
    await dns_harness.publish("A")
    (handle,) = await runtime.list()
    status = spec()["components"]["schemas"]["Status"]
    assert runtime.describe(handle) == {}
    assert set(runtime.describe(handle)) <= set(status["properties"]["replicas"]["items"])


# --- the answer: first lookup, failures, the schedule ------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_an_empty_answer_empties_the_list_only_when_the_next_lookup_confirms_it() -> None:
    """A headless Service answers NXDOMAIN while no pod is ready: one readiness flap under
    load must not empty the ring; a second empty answer a poll later does."""
    clock = Clock()
    dns = FakeDns(["127.0.0.1:5000", "127.0.0.2:5000"], ttl_s=30.0)
    runtime = DnsRuntime("tasks.web", dns.lookup, interval_s=5.0, clock=clock)
    first = await runtime.list()
    dns.addresses = []
    clock.now = 5.0
    assert await runtime.list() == first  # one empty answer: asked again a poll later
    dns.addresses = ["127.0.0.1:5000"]
    clock.now = 6.0
    assert [h.address for h in await runtime.list()] == ["127.0.0.1:5000"]  # back: no flap
    dns.addresses = []
    clock.now = 11.0
    assert len(await runtime.list()) == 1
    clock.now = 16.0
    assert await runtime.list() == []  # confirmed
    assert dns.lookups == 5
    clock.now = 21.0
    assert await runtime.list() == []  # empty stays empty, nothing to confirm


async def test_no_answer_yet_is_a_failure_not_an_empty_list() -> None:
    dns = FakeDns(["127.0.0.1:5000"])
    dns.failing = True
    runtime = DnsRuntime("tasks.web", dns.lookup, interval_s=0.01)
    with pytest.raises(RuntimeFailure, match="has not answered yet"):
        await runtime.list()


@pytest.mark.parametrize("how", ["servfail", "timeout"])
async def test_a_failed_lookup_keeps_the_last_answer(how: str) -> None:
    clock = Clock()
    dns = FakeDns(["127.0.0.1:5000", "127.0.0.2:5000"], ttl_s=1.0)
    runtime = DnsRuntime("tasks.web", dns.lookup, interval_s=5.0, timeout_s=0.05, clock=clock)
    first = await runtime.list()
    dns.failing, dns.hang = how == "servfail", how == "timeout"
    dns.addresses = []
    clock.now = 10.0
    assert await runtime.list() == first
    assert dns.lookups == 2


@pytest.mark.parametrize(
    ("ttl_s", "interval_s", "next_s"),
    [(30.0, 5.0, 5.0), (2.0, 5.0, 2.0), (0.0, 5.0, 1.0), (0.0, 0.5, 0.5), (3.0, 3.0, 3.0)],
)
async def test_the_next_lookup_honours_the_ttl_within_bounds(
    ttl_s: float, interval_s: float, next_s: float
) -> None:
    clock = Clock()
    dns = FakeDns(["127.0.0.1:5000"], ttl_s=ttl_s)
    runtime = DnsRuntime("tasks.web", dns.lookup, interval_s=interval_s, clock=clock)
    await runtime.list()
    clock.now = next_s - 0.001
    await runtime.list()
    assert dns.lookups == 1  # the answer is still fresh
    clock.now = next_s
    await runtime.list()
    assert dns.lookups == 2


async def test_watch_calls_back_on_each_change_and_survives_a_broken_lookup() -> None:
    dns = FakeDns(["127.0.0.1:5000"])
    calls = 0
    broken = True

    async def lookup() -> Answer:
        nonlocal broken
        if broken and dns.lookups == 1:
            broken = False
            raise ValueError("a bug in a lookup")
        return await dns.lookup()

    def changed() -> None:
        nonlocal calls
        calls += 1

    runtime = DnsRuntime("tasks.web", lookup, interval_s=0.01)
    task = asyncio.create_task(runtime.watch(changed))
    try:
        await eventually(lambda: _true(calls == 1), timeout_s=2.0)
        dns.addresses.append("127.0.0.2:5000")
        await eventually(lambda: _true(calls == 2), timeout_s=2.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _true(value: bool) -> bool:
    return value


async def test_refresh_says_whether_the_addresses_changed() -> None:
    clock = Clock()
    dns = FakeDns(["127.0.0.1:5000"])
    runtime = DnsRuntime("tasks.web", dns.lookup, interval_s=1.0, clock=clock)
    assert await runtime.refresh() is True
    clock.now = 1.0
    assert await runtime.refresh() is False
    dns.addresses.append("127.0.0.2:5000")
    clock.now = 2.0
    assert await runtime.refresh() is True


# --- names and hostile answers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "name"),
    [("10.0.1.5:5000", "10.0.1.5_5000"), ("[fd00::1]:80", "fd00--1_80")],
)
def test_a_name_is_its_address(address: str, name: str) -> None:
    from balancer.names import is_valid_name

    assert replica_name(address) == name
    assert is_valid_name(name)


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("10.0.0.1", 5000, "10.0.0.1:5000"),
        ("fd00:0:0::1", 8080, "[fd00::1]:8080"),  # one canonical form: one name
        ("0.0.0.0", 5000, None),
        ("224.0.0.1", 5000, None),
        ("::", 5000, None),
        ("fe80::1%eth0", 5000, None),
        ("web.example", 5000, None),
        ("10.0.0.1", 0, None),
        ("10.0.0.1", 65536, None),
    ],
)
def test_only_addresses_a_replica_can_have_are_used(
    host: str, port: int, expected: str | None
) -> None:
    assert endpoint(host, port) == expected


@pytest.mark.parametrize(
    ("host", "allow", "expected"),
    [
        # by default an answer may not point the balancer at itself or at link-local metadata
        ("127.0.0.1", "", None),
        ("127.5.6.7", "", None),
        ("::1", "", None),
        ("169.254.169.254", "", None),
        ("fe80::1", "", None),
        ("10.0.0.1", "", "10.0.0.1:5000"),
        ("fd00::1", "", "[fd00::1]:5000"),
        # a listed network admits its addresses and nothing else
        ("127.0.0.11", "127.0.0.0/8", "127.0.0.11:5000"),
        ("10.0.0.1", "127.0.0.0/8", None),
        ("10.1.2.3", "10.0.0.0/8, fd00::/8", "10.1.2.3:5000"),
        ("fd00::7", "10.0.0.0/8, fd00::/8", "[fd00::7]:5000"),
        ("192.168.1.1", "10.0.0.0/8, fd00::/8", None),
        ("169.254.169.254", "10.0.0.0/8", None),
        # IPv6 forms that carry an IPv4 address reach that address: never taken, whatever allows
        ("::ffff:127.0.0.1", "", None),
        ("::ffff:169.254.169.254", "", None),
        ("::ffff:10.0.0.1", "::/0", None),
        ("::127.0.0.1", "", None),
        ("64:ff9b::a9fe:a9fe", "", None),
        ("2002:7f00:1::1", "", None),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "", None),
    ],
)
def test_an_answer_is_trusted_only_inside_dns_allow(
    host: str, allow: str, expected: str | None
) -> None:
    assert endpoint(host, 5000, parse_allow(allow)) == expected


@pytest.mark.parametrize("allow", ["10.0.0.1/8", "ten/8", "10.0.0.0/33", "10.0.0.0/8,,x"])
def test_dns_allow_must_be_networks(allow: str) -> None:
    with pytest.raises(ConfigError, match="dns_allow"):
        DnsSettings(name="tasks.web", allow=allow)


def test_a_huge_answer_is_capped() -> None:
    addresses = [f"10.0.{i // 250}.{i % 250 + 1}:5000" for i in range(MAX_ADDRESSES + 50)]
    kept = bounded("tasks.web", addresses + addresses)
    assert len(kept) == MAX_ADDRESSES
    assert list(kept) == sorted(set(addresses))[:MAX_ADDRESSES]


# --- settings ----------------------------------------------------------------------------------


def test_the_registry_builds_it_from_its_section() -> None:
    runtime = RUNTIMES.build("dns", DnsSettings(name="tasks.web", server="127.0.0.1:53"))
    assert isinstance(runtime, DnsRuntime)
    assert runtime.managed_by == "DNS name tasks.web"
    assert isinstance(RUNTIMES.build("dns", DnsSettings(name="x", server="[::1]:53")), DnsRuntime)


@pytest.mark.parametrize(
    "bad",
    [
        {"record": "mx"},
        {"port": 0},
        {"port": 70000},
        {"interval_s": 0.0},
        {"server": "127.0.0.1"},
        {"server": "127.0.0.1:x"},
        {"server": "dns.example:53"},  # dnspython asks addresses, not names
    ],
)
def test_bad_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DnsSettings(name="tasks.web", **bad)  # type: ignore[arg-type]


def test_a_name_is_required() -> None:
    with pytest.raises(ConfigError, match="dns_name"):
        dns_runtime(DnsSettings())

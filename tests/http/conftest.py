"""Fixtures and helpers of the data-path tests over real sockets."""

from __future__ import annotations

import pytest

from balancer.http.frontend import Frontend
from tests.conftest import Balancer, BalancerFactory
from tests.http.replicas import Handler, RawRuntime, echo_app
from tests.support.runtime import InProcessRuntime


@pytest.fixture
async def echo_lb(make_balancer: BalancerFactory) -> Balancer:
    """Three ``echo_app`` replicas."""
    return await make_balancer(InProcessRuntime(echo_app))


async def raw_balancer(
    make_balancer: BalancerFactory, handler: Handler, **overrides: object
) -> tuple[Balancer, RawRuntime]:
    """A balancer over raw replicas (one unless ``replicas`` says otherwise)."""
    runtime = RawRuntime(handler)
    lb = await make_balancer(runtime, **{"replicas": 1, **overrides})
    return lb, runtime


def frontend(lb: Balancer) -> Frontend:
    fe = lb.service.frontend
    assert fe is not None
    return fe


def owner(lb: Balancer, key: str) -> str:
    """The replica name the ring assigns ``key`` to."""
    return lb.service.view.current.ring.lookup(key)


def keys_by_owner(lb: Balancer, prefix: str, per_owner: int = 1) -> dict[str, list[str]]:
    """``per_owner`` keys for each replica, found by walking ``prefix-0``, ``prefix-1``, …"""
    members = set(lb.service.view.current.addresses)
    found: dict[str, list[str]] = {m: [] for m in members}
    for i in range(10_000):
        key = f"{prefix}-{i}"
        bucket = found[owner(lb, key)]
        if len(bucket) < per_owner:
            bucket.append(key)
        if all(len(b) == per_owner for b in found.values()):
            return found
    raise AssertionError("could not find keys for every replica")


async def server_ids(lb: Balancer) -> dict[str, str]:
    """Replica name → server id (what the replica reports)."""
    return {h.name: h.server_id for h in await lb.runtime.list()}

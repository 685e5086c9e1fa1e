"""The state contract suites once more, over the Sentinel backend (``sentinel_backend``).

Every body of the contract suites and of the backend-factory tests that takes the ``state``
fixture is collected here again, and ``state`` is overridden: each instance is a backend made by
``sentinel_backend`` over one master, its replica and a Sentinel started for this module (each
test under a key prefix of its own). Bodies the suites run over several shared backends
(``shared_only``) run here once. The outage bodies are fakeredis's and are not repeated, nor
is ``test_a_stale_token_cannot_restore_nor_commit``: it writes the counter by hand, a token no
server minted, which bound fencing refuses by design (``test_sentinel_fencing`` covers it).
"""

from __future__ import annotations

import contextlib
import inspect
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis.asyncio as redis

from balancer.state.backends import StateBackend
from balancer.state.sentinel import sentinel_backend
from tests.state import (
    test_backends,
    test_events_contract,
    test_instances_contract,
    test_liveness_contract,
    test_membership_contract,
    test_records_contract,
)
from tests.state.conftest import LEADER_TTL_S, SharedState
from tests.support.sentinel import MASTER_NAME, SentinelGroup, sentinel_binary

pytestmark = pytest.mark.skipif(
    sentinel_binary() is None, reason="needs redis-sentinel (Debian package redis-sentinel)"
)

SUITES: tuple[ModuleType, ...] = (
    test_backends,
    test_events_contract,
    test_instances_contract,
    test_liveness_contract,
    test_membership_contract,
    test_records_contract,
)


# Bodies that assume fencing not bound to a server (see the module docstring).
UNBOUND_ONLY = {"test_a_stale_token_cannot_restore_nor_commit"}


def _collect() -> None:
    """Bind each ``state`` body of the suites under a name of this module."""
    for suite in SUITES:
        short = suite.__name__.rsplit(".", 1)[1].removeprefix("test_")
        for name, body in vars(suite).items():
            if name in UNBOUND_ONLY or not name.startswith("test_"):
                continue
            if "state" in inspect.signature(body).parameters:
                globals()[f"test_{short}__{name.removeprefix('test_')}"] = body


_collect()


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    workdir: Path = tmp_path_factory.mktemp("sentinel-contract")
    made = SentinelGroup(workdir, replicas=1, sentinels=1)
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
async def state(request: pytest.FixtureRequest, group: SentinelGroup) -> AsyncIterator[SharedState]:
    if getattr(request, "param", None) == "redis":  # a shared_only body: it ran as fakeredis
        pytest.skip("ran once over the Sentinel backend already")
    prefix = f"test:{uuid.uuid4().hex[:8]}:"

    def make(instance_id: str) -> StateBackend:
        return sentinel_backend(
            group.addresses,
            master_name=MASTER_NAME,
            instance_id=instance_id,
            leader_ttl_s=LEADER_TTL_S,
            timeout_s=2.0,
            answer_timeout_s=2.0,
            prefix=prefix,
        )

    made = SharedState("sentinel", make)
    try:
        yield made
    finally:
        for backend in made.made:
            await backend.aclose()
        cleanup = redis.Redis(port=group.master.port)
        with contextlib.suppress(redis.RedisError, OSError):
            async for key in cleanup.scan_iter(match=f"{prefix}*"):
                await cleanup.delete(key)
        await cleanup.aclose()

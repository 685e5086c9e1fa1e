"""Replicas of the process runtime do not inherit the balancer's secrets.

Real ``python -m server`` children: each replica's environment is read where any process of
the same user (or code running inside the replica) can read it, ``/proc/<pid>/environ``.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancer.runtimes.process import ProcessRuntime
from tests.support.balancer_process import BalancerProcess

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/environ"), reason="reads /proc/<pid>/environ"
)


def environ_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [entry.decode().partition("=") for entry in f.read().split(b"\0") if entry]
    return {name: value for name, _, value in pairs}


@pytest.fixture
def secret_env() -> dict[str, str]:
    """The balancer's secrets (fresh random values, so a match cannot be a coincidence)."""
    return {
        "LB_ADMIN_TOKEN": secrets.token_hex(16),
        "LB_HASH_SEED": str(secrets.randbits(128)),
        "REDISCLI_AUTH": secrets.token_hex(16),  # redis-cli's password variable
        "APP_DB_PASSWORD": secrets.token_hex(16),
    }


def assert_no_secrets(env: dict[str, str], secret_env: dict[str, str]) -> None:
    """No secret's name, no ``LB_*`` name, and no secret's value under any name (only the
    names are shown on failure: the values are this machine's environment)."""
    leaked = sorted(name for name in env if name in secret_env or name.startswith("LB_"))
    assert not leaked
    holding = sorted(name for name, v in env.items() if any(s in v for s in secret_env.values()))
    assert not holding


async def test_a_spawned_replica_gets_no_secret_of_the_balancer(
    monkeypatch: pytest.MonkeyPatch, secret_env: dict[str, str]
) -> None:
    for name, value in secret_env.items():
        monkeypatch.setenv(name, value)
    runtime = ProcessRuntime(stop_grace_s=2.0)
    try:
        handle = await runtime.spawn("Server 1", "1")
        pid = runtime.describe(handle)["pid"]
        assert isinstance(pid, int)
        env = environ_of(pid)
    finally:
        await runtime.close()
    assert env["SERVER_ID"] == "1"
    assert env.get("PATH") == os.environ.get("PATH")
    assert_no_secrets(env, secret_env)


MARK = "CHLB_REPLICA_ENV_TEST_MARK"


@pytest.fixture
def mark() -> str:
    return secrets.token_hex(8)


@pytest.fixture
def balancer(tmp_path: Path, secret_env: dict[str, str], mark: str) -> Iterator[BalancerProcess]:
    env = {
        **os.environ,
        **secret_env,
        "LB_HASH_NAME": "siphash",  # keyed: LB_HASH_SEED is its secret key
        MARK: mark,
        "LB_REPLICA_ENV": MARK,  # passed on purpose
    }
    lb = BalancerProcess(tmp_path / "balancer.log", "--replicas", "2", env=env)
    try:
        lb.wait_listening()
        yield lb
    finally:
        lb.stop()


def test_replicas_of_a_running_balancer_hold_none_of_its_secrets(
    balancer: BalancerProcess, secret_env: dict[str, str], mark: str
) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{balancer.url}/lb/status", timeout=5) as resp:
        replicas = json.loads(resp.read())["replicas"]
    assert len(replicas) == 2
    balancer_env = environ_of(balancer.proc.pid)
    assert balancer_env["LB_ADMIN_TOKEN"] == secret_env["LB_ADMIN_TOKEN"]  # the test's premise
    for replica in replicas:
        env = environ_of(replica["pid"])
        assert env["SERVER_ID"] == replica["server_id"]
        assert env[MARK] == mark  # --replica-env
        assert_no_secrets(env, secret_env)

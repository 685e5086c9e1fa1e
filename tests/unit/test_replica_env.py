"""What a replica of the process runtime inherits from the balancer's environment: an
allow-list (what ``python -m server`` needs to start), plus the names an operator passes with
``--replica-env``; never the balancer's own ``LB_*`` settings or anything else."""

from __future__ import annotations

import pytest

from balancer.config import Settings, load_settings
from balancer.errors import ConfigError
from balancer.runtimes.process import ProcessRuntime, replica_environment

BALANCER_ENV = {
    "PATH": "/opt/venv/bin:/usr/bin",
    "HOME": "/home/lb",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "PYTHONPATH": "/srv/chlb",
    "LB_ADMIN_TOKEN": "admin-token-value",
    "LB_HASH_SEED": "0x8f3c52a1d7e04b69c21e5fa0b3d94e7f",
    "LB_REDIS_URL": "redis://:hunter2@redis:6379/0",
    "REDISCLI_AUTH": "hunter2",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "GITHUB_TOKEN": "ghp-token",
    "DB_PASSWORD": "db-password",
    "SERVER_ID": "inherited-id",
    "SOMETHING_ELSE": "x",
}


def test_only_the_allow_list_and_the_replica_id_are_passed() -> None:
    env = replica_environment(BALANCER_ENV, "3fa91c")
    assert env == {
        "PATH": "/opt/venv/bin:/usr/bin",
        "HOME": "/home/lb",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "PYTHONPATH": "/srv/chlb",
        "SERVER_ID": "3fa91c",
    }


def test_names_passed_on_purpose_are_added_but_never_the_balancers_settings() -> None:
    env = replica_environment(BALANCER_ENV, "7", ("SOMETHING_ELSE", "NOT_SET"))
    assert env["SOMETHING_ELSE"] == "x" and "NOT_SET" not in env
    assert not any(name.startswith("LB_") for name in env)
    with pytest.raises(ValueError, match="LB_"):
        replica_environment(BALANCER_ENV, "7", ("LB_ADMIN_TOKEN",))
    with pytest.raises(ValueError, match="LB_"):
        ProcessRuntime(pass_env=("LB_HASH_SEED",))


def test_replica_env_setting_is_a_checked_list_of_names() -> None:
    assert Settings().runtimes["process"].env_names == ()
    s = load_settings([], {"LB_REPLICA_ENV": "HTTP_PROXY, NO_PROXY"})
    assert s.runtimes["process"].env_names == ("HTTP_PROXY", "NO_PROXY")
    for bad in ("LB_ADMIN_TOKEN", "HTTP_PROXY,LB_HASH_SEED", "NOT A NAME", "1X"):
        with pytest.raises(ConfigError, match="replica_env"):
            Settings.from_flat(replica_env=bad)

"""The Sentinel settings and what the backend takes from the URL (no server needed)."""

from __future__ import annotations

import pytest

from balancer.config import Settings
from balancer.errors import ConfigError
from balancer.sections import StateSettings
from balancer.state.sentinel import credentials, describe, sentinel_backend


def test_sentinels_parse_into_addresses_and_make_the_state_shared() -> None:
    state = StateSettings(redis_sentinel="s1:26379, 10.0.0.2:26380,[::1]:5")
    assert state.sentinels == (("s1", 26379), ("10.0.0.2", 26380), ("::1", 5))
    assert state.shared and state.redis_master_name == "chlb"
    assert not StateSettings().shared and StateSettings().sentinels == ()
    assert StateSettings(redis_url="redis://h").shared


@pytest.mark.parametrize("bad", ["s1", "s1:", ":26379", "s1:0", "s1:70000", "s1:x"])
def test_a_sentinel_that_is_not_host_port_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="redis_sentinel"):
        Settings.from_flat(redis_sentinel=f"ok:1,{bad}")


def test_the_url_gives_only_the_masters_db_and_credentials() -> None:
    assert credentials("redis://u:pw@ignored:1/3") == {"db": 3, "username": "u", "password": "pw"}
    assert credentials("") == {}
    assert "pw" not in describe([("s1", 26379)], "chlb")


def test_a_sentinel_backend_needs_a_sentinel() -> None:
    with pytest.raises(ValueError):
        sentinel_backend([], instance_id="i", leader_ttl_s=1.0, timeout_s=1.0, answer_timeout_s=1.0)


def test_a_tls_url_with_sentinels_is_refused_not_downgraded() -> None:
    """The Sentinel clients speak plain TCP: a ``rediss://`` URL's password would go to the
    master in clear text."""
    with pytest.raises(ConfigError, match="rediss"):
        StateSettings(redis_sentinel="127.0.0.1:26379", redis_url="rediss://:secret@h:6380/0")
    assert StateSettings(redis_url="rediss://:secret@h:6380/0").shared  # TLS alone stays

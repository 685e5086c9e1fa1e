"""A keyed hash (siphash, blake2b) is never keyed with a public seed: not at start (Settings,
``lb-balancer``) and not through a settings change (``settings_change``, behind
``PUT /lb/settings``). A switch away from a keyed hash does not make its key a public seed."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from balancer.api.admin_input import settings_change
from balancer.config import Settings, load_settings
from balancer.errors import ConfigError
from balancer.hashing import RingSettings
from balancer.hashing.hashes import DEFAULT_SEED

SECRET = 0x8F3C52A1D7E04B69C21E5FA0B3D94E77  # 128 bits: a siphash key
SECRET64 = 0xC21E5FA0B3D94E77  # a blake2b key
KEYED = ["siphash", "blake2b"]


def texts(value: int) -> list[str]:
    return [str(value), f"{value:x}", f"{value:X}"]


@pytest.mark.parametrize("hash_name", KEYED)
def test_a_keyed_hash_without_a_seed_refuses_to_start(hash_name: str) -> None:
    with pytest.raises(ConfigError, match=rf"{hash_name} needs a secret key") as raised:
        Settings.from_flat(hash_name=hash_name)
    assert "LB_HASH_SEED" in str(raised.value) and "secrets.randbits" in str(raised.value)
    with pytest.raises(ConfigError, match="secret key"):
        load_settings([], {"LB_HASH_NAME": hash_name})
    with pytest.raises(ConfigError, match="secret key"):
        load_settings(["--hash-name", hash_name], {})


@pytest.mark.parametrize("hash_name", KEYED)
def test_the_default_seed_is_public_even_when_given(hash_name: str) -> None:
    with pytest.raises(ConfigError, match="secret key"):
        load_settings(["--hash-name", hash_name], {"LB_HASH_SEED": hex(DEFAULT_SEED)})


@pytest.mark.parametrize(("hash_name", "seed"), [("siphash", SECRET), ("blake2b", SECRET64)])
def test_a_keyed_hash_with_a_secret_seed_starts(hash_name: str, seed: int) -> None:
    s = load_settings([], {"LB_HASH_NAME": hash_name, "LB_HASH_SEED": hex(seed)})
    assert (s.ring.hash_name, s.ring.hash_seed) == (hash_name, seed)


def test_xxh3_keeps_its_public_default_seed() -> None:
    assert Settings().ring.hash_seed == DEFAULT_SEED
    assert load_settings([], {"LB_HASH_SEED": hex(DEFAULT_SEED)}).ring == Settings().ring


def test_lb_balancer_exits_with_the_reason() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "balancer", "--hash-name", "siphash", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=20,  # a balancer that started would run until killed here: the test fails
        env={"PATH": "/usr/bin:/bin", "LB_REPLICAS": "0"},  # no replicas even if it starts
        check=False,
    )
    assert done.returncode == 1
    assert "siphash needs a secret key" in done.stderr and "LB_HASH_SEED" in done.stderr


PUBLIC = RingSettings()  # xxh3 with the default seed
SHOWN = RingSettings(hash_seed=12345)  # xxh3 with a seed GET /lb/settings shows
SIP = RingSettings(hash_name="siphash", hash_seed=SECRET)
BLAKE = RingSettings(hash_name="blake2b", hash_seed=SECRET64)


@pytest.mark.parametrize(
    ("base", "body"),
    [
        (PUBLIC, {"hash_name": "siphash"}),
        (PUBLIC, {"hash_name": "blake2b"}),
        (PUBLIC, {"hash_name": "siphash", "hash_seed": DEFAULT_SEED}),
        (SHOWN, {"hash_name": "siphash"}),  # xxh3's seed is public: GET /lb/settings shows it
        (SHOWN, {"hash_name": "blake2b", "hash_seed": 12345}),
        (SIP, {"hash_seed": DEFAULT_SEED}),
        (dataclasses.replace(SIP, hash_seed=DEFAULT_SEED), {"algorithm": "maglev"}),
    ],
)
def test_a_change_to_a_keyed_hash_with_a_public_seed_is_refused(
    base: RingSettings, body: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match="needs a secret key") as raised:
        settings_change(body, base)
    assert "'hash_seed'" in str(raised.value)
    for text in texts(base.hash_seed):
        assert text not in str(raised.value)


@pytest.mark.parametrize(
    ("base", "body", "hash_name", "seed"),
    [
        (PUBLIC, {"hash_name": "siphash", "hash_seed": SECRET}, "siphash", SECRET),
        (SHOWN, {"hash_name": "blake2b", "hash_seed": SECRET64}, "blake2b", SECRET64),
        (SIP, {"algorithm": "maglev"}, "siphash", SECRET),  # the secret stays in force
        (SIP, {"hash_seed": SECRET64}, "siphash", SECRET64),  # a new key
        (BLAKE, {"hash_name": "siphash"}, "siphash", SECRET64),  # keyed to keyed: still secret
        (SIP, {"hash_name": "xxh3"}, "xxh3", DEFAULT_SEED),  # the key does not become public
        (BLAKE, {"hash_name": "xxh3", "hash_seed": 7}, "xxh3", 7),
        (PUBLIC, {"hash_seed": 7}, "xxh3", 7),
    ],
)
def test_a_change_keeps_keyed_seeds_secret(
    base: RingSettings, body: dict[str, object], hash_name: str, seed: int
) -> None:
    changed = settings_change(body, base)
    assert (changed.hash_name, changed.hash_seed) == (hash_name, seed)

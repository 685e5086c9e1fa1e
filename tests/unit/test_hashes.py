"""The named hashes: reference vectors, seeds (ranges, secrecy, hex from the environment) and
agreement between processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balancer.config import Settings, load_settings
from balancer.errors import ConfigError
from balancer.hashing import (
    ALGORITHMS,
    HASH_NAMES,
    Algorithm,
    HashName,
    Member,
    RingSettings,
    build_ring,
)
from balancer.hashing.hashes import DEFAULT_SEED, SEED_BITS, make_hash

M64 = (1 << 64) - 1
# The SipHash paper's key 00 01 … 0f: the seed whose 16 little-endian bytes are that key.
PAPER_KEY = bytes(range(16))
PAPER_SEED = int.from_bytes(PAPER_KEY, "little")
# A 128-bit secret as an operator would pass it.
SECRET_HEX = "0x8f3c52a1d7e04b69c21e5fa0b3d94e77"
SECRET = int(SECRET_HEX, 16)


def sip_reference(key: bytes, data: bytes) -> int:
    """SipHash-2-4 straight from the paper (Aumasson and Bernstein, 2012), in pure Python."""

    def rotl(x: int, b: int) -> int:
        return ((x << b) | (x >> (64 - b))) & M64

    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D]
    v += [k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]

    def sip_round() -> None:
        v[0] = (v[0] + v[1]) & M64
        v[1] = rotl(v[1], 13) ^ v[0]
        v[0] = rotl(v[0], 32)
        v[2] = (v[2] + v[3]) & M64
        v[3] = rotl(v[3], 16) ^ v[2]
        v[0] = (v[0] + v[3]) & M64
        v[3] = rotl(v[3], 21) ^ v[0]
        v[2] = (v[2] + v[1]) & M64
        v[1] = rotl(v[1], 17) ^ v[2]
        v[2] = rotl(v[2], 32)

    full = len(data) - len(data) % 8
    blocks = [int.from_bytes(data[i : i + 8], "little") for i in range(0, full, 8)]
    blocks.append(((len(data) & 0xFF) << 56) | int.from_bytes(data[full:], "little"))
    for m in blocks:
        v[3] ^= m
        sip_round()
        sip_round()
        v[0] ^= m
    v[2] ^= 0xFF
    for _ in range(4):
        sip_round()
    return v[0] ^ v[1] ^ v[2] ^ v[3]


# veorq/SipHash vectors.h (vectors_sip64, key 00..0f, message 00 01 .. (n-1)) as little-endian
# integers, and the worked example of the paper's appendix A (15 bytes).
PAPER_VECTORS = {
    0: 0x726FDB47DD0E0E31,
    1: 0x74F839C593DC67FD,
    2: 0x0D6C8009D9A94F5A,
    3: 0x85676696D7FB7E2D,
    15: 0xA129CA6149BE45E5,
}


@pytest.mark.parametrize(("length", "expected"), sorted(PAPER_VECTORS.items()))
def test_siphash_matches_the_reference_vectors(length: int, expected: int) -> None:
    assert sip_reference(PAPER_KEY, bytes(range(length))) == expected  # the checker is right
    assert make_hash("siphash", PAPER_SEED)(bytes(range(length))) == expected


def test_siphash_of_abc_and_the_unsigned_range() -> None:
    siphash = make_hash("siphash", PAPER_SEED)
    assert siphash(b"abc") == sip_reference(PAPER_KEY, b"abc") == 0x5DBCFA53AA2007A5
    # The library's intdigest is signed; a value with the top bit set must come out unsigned.
    assert siphash(bytes(range(15))) > 2**63


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), data=st.binary(max_size=80))
def test_siphash_agrees_with_the_reference_everywhere(key: bytes, data: bytes) -> None:
    assert make_hash("siphash", int.from_bytes(key, "little"))(data) == sip_reference(key, data)


def test_existing_hashes_keep_their_values() -> None:
    """xxh3 and blake2b rings must not move: values pinned from before siphash existed."""
    assert make_hash("xxh3")(b"abc") == 0xA9E4E4D53E7E4DBD
    assert make_hash("blake2b")(b"abc") == 0x58796F8F594459B8
    assert make_hash("xxh3", 7)(b"abc") == 0x48FF56F569E39912
    assert make_hash("blake2b", 7)(b"abc") == 0x950F893FCADC7132


@pytest.mark.parametrize("name", HASH_NAMES)
def test_seeds_change_values_and_equal_seeds_agree(name: HashName) -> None:
    data = [f"key-{n}".encode() for n in range(50)]
    top = (1 << SEED_BITS[name]) - 1
    seeds = [0, 1, DEFAULT_SEED, top]
    outputs = {seed: [make_hash(name, seed)(d) for d in data] for seed in seeds}
    for a in seeds:
        assert outputs[a] == [make_hash(name, a)(d) for d in data]
        assert all(0 <= h <= M64 for h in outputs[a])
        for b in seeds:
            if a < b:
                assert sum(x != y for x, y in zip(outputs[a], outputs[b], strict=True)) >= 49


def test_siphash_uses_all_128_bits_of_the_seed() -> None:
    low = make_hash("siphash", SECRET & M64)
    assert low(b"key") != make_hash("siphash", SECRET)(b"key")
    assert make_hash("siphash", 1 << 127)(b"key") != make_hash("siphash", 0)(b"key")


CHILD = textwrap.dedent(
    """
    import json, sys
    from balancer.hashing.hashes import make_hash
    seeds = json.loads(sys.argv[1])
    json.dump({n: make_hash(n, s)(b"key-1") for n, s in seeds.items()}, sys.stdout)
    """
)


def test_same_values_in_another_process() -> None:
    seeds: dict[HashName, int] = {"xxh3": DEFAULT_SEED, "blake2b": 7, "siphash": SECRET}
    env = {**os.environ, "PYTHONHASHSEED": "random"}  # the builtin hash() would differ
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(seeds)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    mine = {n: make_hash(n, s)(b"key-1") for n, s in seeds.items()}
    assert json.loads(result.stdout) == mine


@pytest.mark.parametrize(
    ("name", "seed"),
    [("xxh3", -1), ("xxh3", 2**64), ("blake2b", 2**64), ("siphash", -1), ("siphash", 2**128)],
)
def test_out_of_range_seeds_are_rejected_without_showing_them(name: HashName, seed: int) -> None:
    with pytest.raises(ValueError, match=r"2\*\*(64|128)") as raised:
        make_hash(name, seed)
    assert str(seed) not in str(raised.value)


@pytest.mark.parametrize(("name", "seed"), [("xxh3", 2**64 - 1), ("siphash", 2**128 - 1)])
def test_range_edges_are_accepted(name: HashName, seed: int) -> None:
    assert 0 <= make_hash(name, seed)(b"x") <= M64


def test_unknown_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="siphash"):
        make_hash("sha1", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_builds_with_siphash(algorithm: Algorithm) -> None:
    ring_settings = RingSettings(algorithm=algorithm, hash_name="siphash", hash_seed=SECRET)
    members = [Member(f"Server {i}", i) for i in range(1, 6)]
    ring = build_ring(members, ring_settings)
    again = build_ring(list(reversed(members)), ring_settings)
    keys = [f"key-{n}" for n in range(300)]
    owners = [ring.lookup(k) for k in keys]
    assert owners == [again.lookup(k) for k in keys]
    assert len(set(owners)) == 5
    other = build_ring(members, RingSettings(algorithm=algorithm, hash_name="siphash"))
    assert sum(a != b for a, b in zip(owners, (other.lookup(k) for k in keys), strict=True)) > 60


# --- configuration ----------------------------------------------------------------------------


def test_siphash_with_a_128_bit_hex_secret_from_the_environment() -> None:
    s = load_settings(["--hash-name", "siphash"], {"LB_HASH_SEED": SECRET_HEX})
    assert (s.routing.hash_name, s.routing.hash_seed) == ("siphash", SECRET)
    assert (s.ring.hash_name, s.ring.hash_seed) == ("siphash", SECRET)
    assert load_settings([], {"LB_HASH_NAME": "siphash", "LB_HASH_SEED": str(SECRET)}) == s
    upper = "0X" + SECRET_HEX[2:].upper()
    assert (
        load_settings(["--hash-name=siphash", "--hash-seed", upper], {}).routing.hash_seed == SECRET
    )


@pytest.mark.parametrize(
    ("hash_name", "seed"),
    [
        ("siphash", hex(2**128 + 0xBEEF)),
        ("xxh3", hex(2**64 + 0xBEEF)),
        ("blake2b", SECRET_HEX),
        ("siphash", "-0x1"),
    ],
)
def test_seed_out_of_range_for_the_hash_is_a_config_error(hash_name: str, seed: str) -> None:
    with pytest.raises(ConfigError, match=rf"hash_seed .*for hash_name {hash_name}") as raised:
        load_settings(["--hash-name", hash_name], {"LB_HASH_SEED": seed})
    if int(seed, 16) > 0:
        assert seed[-8:] not in str(raised.value).lower()
        assert str(int(seed, 16)) not in str(raised.value)


def test_a_malformed_seed_is_not_echoed() -> None:
    typo = "0x8f3c52a1d7e04b69c21e5fa0b3d94e7g"
    with pytest.raises(ConfigError, match="hash_seed") as raised:
        load_settings([], {"LB_HASH_SEED": typo})
    assert typo not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_settings_repr_hides_the_seed() -> None:
    s = Settings.from_flat(hash_name="siphash", hash_seed=SECRET)
    for shown in (repr(s), str(s), repr(s.ring)):
        assert str(SECRET) not in shown and SECRET_HEX[2:] not in shown.lower()
        assert "hash_seed" not in shown

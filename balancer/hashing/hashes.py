"""Seeded 64-bit hash functions for keys and ring points.

Owns: the named hash functions the rings use and the seed range each accepts. Every function maps
bytes to an unsigned 64-bit integer and gives the same answer in every process on every host for
the same seed (never the builtin ``hash()``, which is randomised per process).

Also owns the rule that a keyed hash (``KEYED_HASHES``: siphash, blake2b) never runs on a public
seed. ``DEFAULT_SEED`` is printed in this file, so a keyed hash under it is keyed with a public
key and gives no protection against hash flooding while the API calls its seed "(secret)". The
configuration (``Settings``) refuses to start with a keyed hash whose seed is the default, and a
``PUT /lb/settings`` that would run one on a public seed is refused (400): the operator supplies
the key. The check is on the value, not on whether a seed was given: the default seed typed in
by hand is just as public. Generating a random key into the shared state instead was rejected:
a key that exists only in Redis changes, and silently moves every key, whenever that state is
lost or reset; instances started without shared state would each pick their own; and routing
could no longer be reproduced outside the balancer (``report``, a replay of ``/lb/lookup``). An
explicit secret (``LB_HASH_SEED``, the same on every instance) has none of these problems.
Must not import: asyncio, aiohttp, redis, docker, prometheus_client or any project module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal, Protocol

import xxhash
from siphash24 import siphash24 as _siphash24  # type: ignore[import-not-found]  # no stubs

HashFn = Callable[[bytes], int]
HashName = Literal["xxh3", "blake2b", "siphash"]
HASH_NAMES: tuple[HashName, ...] = ("xxh3", "blake2b", "siphash")

DEFAULT_SEED = 0x5EED_CAFE
# A seed is an integer in [0, 2**SEED_BITS[name]). xxh3 takes a 64-bit seed and blake2b keeps its
# 8-byte key (so existing seeds build the rings they always built); siphash takes its whole
# 128-bit key from the seed.
SEED_BITS: dict[HashName, int] = {"xxh3": 64, "blake2b": 64, "siphash": 128}

# The hashes whose seed is a key, to be kept secret: their seed is never shown by the API, and
# never the public DEFAULT_SEED (``runs_on_public_seed``).
KEYED_HASHES: frozenset[HashName] = frozenset({"blake2b", "siphash"})

_MASK64 = (1 << 64) - 1


def runs_on_public_seed(name: HashName, seed: int) -> bool:
    """True when ``name`` is a keyed hash and ``seed`` is the public ``DEFAULT_SEED``."""
    return name in KEYED_HASHES and seed == DEFAULT_SEED


def key_command(name: HashName) -> str:
    """A shell command that prints a random key of the right size for ``name``."""
    return f"python -c 'import secrets; print(secrets.randbits({SEED_BITS.get(name, 64)}))'"


class _SipState(Protocol):
    def intdigest(self) -> int: ...


_new_siphash: Callable[..., _SipState] = _siphash24


def make_hash(name: HashName, seed: int = DEFAULT_SEED) -> HashFn:
    """Return the named 64-bit hash with ``seed`` bound in.

    Args:
        name: ``xxh3`` (fast, the default, not keyed: anyone who knows the seed, or can guess it
            from observed placements, can compute collisions), ``blake2b`` (keyed, slower,
            stdlib only) or ``siphash`` (SipHash-2-4, a keyed PRF built against hash flooding;
            the seed is its 128-bit key and must be secret and random to serve that purpose).
        seed: an integer in ``[0, 2**SEED_BITS[name])``; the same seed gives the same ring
            everywhere. For ``siphash`` the key is ``seed.to_bytes(16, "little")``.

    Raises:
        ValueError: for an unknown name or a seed out of range (the message never shows the
            seed, which may be a secret).
    """
    if name not in SEED_BITS:
        raise ValueError(f"unknown hash function {name!r}; choose from {', '.join(HASH_NAMES)}")
    bits = SEED_BITS[name]
    if not 0 <= seed < 1 << bits:
        raise ValueError(f"a {name} hash seed must be in [0, 2**{bits})")
    if name == "xxh3":
        xxh3 = xxhash.xxh3_64_intdigest

        def _xxh3(data: bytes) -> int:
            return xxh3(data, seed)

        return _xxh3
    if name == "blake2b":
        key = seed.to_bytes(8, "little")

        def _blake2b(data: bytes) -> int:
            digest = hashlib.blake2b(data, digest_size=8, key=key).digest()
            return int.from_bytes(digest, "little")

        return _blake2b
    return _siphash_fn(seed)


def _siphash_fn(seed: int) -> HashFn:
    # The library has no one-shot call: each hash builds a state object (most of the cost) and
    # finalises it. A memoryview key is taken by the C code a little faster than bytes.
    # ``intdigest`` is signed; the mask makes it the unsigned value the rings sort by.
    new = _new_siphash
    key = memoryview(seed.to_bytes(16, "little"))

    def _siphash(data: bytes) -> int:
        return new(data, key=key).intdigest() & _MASK64

    return _siphash

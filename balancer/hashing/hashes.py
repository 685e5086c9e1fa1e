"""Fixed-seed 64-bit hash functions for keys and ring points.

Owns: the named hash functions the rings use. Every function maps bytes to an unsigned 64-bit
integer and gives the same answer in every process on every host (never the builtin ``hash()``,
which is randomised per process).
Must not import: asyncio, aiohttp, redis, docker, prometheus_client or any project module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal

import xxhash

HashFn = Callable[[bytes], int]
HashName = Literal["xxh3", "blake2b"]
HASH_NAMES: tuple[HashName, ...] = ("xxh3", "blake2b")

DEFAULT_SEED = 0x5EED_CAFE


def make_hash(name: HashName, seed: int = DEFAULT_SEED) -> HashFn:
    """Return the named 64-bit hash with ``seed`` bound in.

    Args:
        name: ``xxh3`` (fast, the default) or ``blake2b`` (keyed, slower, stdlib only).
        seed: any non-negative integer below 2**64; the same seed gives the same ring everywhere.

    Raises:
        ValueError: for an unknown name or a seed out of range.
    """
    if not 0 <= seed < 2**64:
        raise ValueError(f"hash seed must be in [0, 2**64), got {seed}")
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
    raise ValueError(f"unknown hash function {name!r}; choose from {', '.join(HASH_NAMES)}")

"""The default algorithm: a table of hash slots, kept exactly balanced with minimal movement.

Owns ``SlotRing``, ``rebalance`` and the compact text form of a slot table. The hash space is cut
into ``SLOT_COUNT`` slots (``hash(key) & (SLOT_COUNT - 1)``, as Redis Cluster cuts its key space
into 16,384); every slot has one owner, and every member owns its weight's share of the slots,
rounded to whole slots (largest remainder). A lookup is one hash and one list index, whatever N.

The table is state, not a function of the member set: a membership change ``rebalance``\\s the
previous table, freeing the slots of departed members and the excess of members above their new
share, and dealing them to members below it. Only those slots change owner, which is the
minimum any balanced assignment can move (the ideal share, within a slot per member). The same
(previous table, members) always gives the same table, and a table built without a predecessor
depends only on the member set, so every process agrees; the shared state carries the table
(``encode``/``decode``) so that instances that started at different times agree too.

Where a slot goes: freed slots are taken, and dealt, in a fixed pseudo-random slot order, so each
member's slots are spread over the whole hash space and the next slots after any slot belong to
random members (the retry candidates of ``candidates``).
Must not import: asyncio, aiohttp, redis, docker, prometheus_client.
"""

from __future__ import annotations

import base64
import functools
import sys
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence

import xxhash

from balancer.hashing.base import Member, NoReplicasError, checked_members
from balancer.hashing.hashes import HashFn

SLOT_BITS = 16
SLOT_COUNT = 1 << SLOT_BITS
_MASK = SLOT_COUNT - 1
_ORDER_SEED = 0x51_07_0D_E2  # fixed forever: changing it reshuffles every stored table's rebuild


@functools.cache
def slot_order() -> tuple[int, ...]:
    """Every slot once, in the fixed pseudo-random order slots are freed and dealt in."""
    digest = xxhash.xxh3_64_intdigest
    return tuple(sorted(range(SLOT_COUNT), key=lambda s: digest(s.to_bytes(4), _ORDER_SEED)))


def quotas(members: Sequence[Member], held: Counter[str]) -> dict[str, int]:
    """Slots each member should own: its weight's share of ``SLOT_COUNT``, largest remainder.

    Ties between equal remainders go first to the members that already hold more than their
    rounded-down share (then by name), so a table that is already balanced keeps every slot
    where it is: ``rebalance`` of its own result changes nothing.
    """
    total = sum(m.weight for m in members)
    share = {m.name: divmod(SLOT_COUNT * m.weight, total) for m in members}
    left = SLOT_COUNT - sum(q for q, _ in share.values())

    def rank(m: Member) -> tuple[int, bool, str]:
        floor, remainder = share[m.name]
        return (-remainder, held[m.name] <= floor, m.name)

    ranked = sorted(members, key=rank)
    bonus = {m.name for m in ranked[:left]}
    return {m.name: share[m.name][0] + (m.name in bonus) for m in members}


def rebalance(members: Iterable[Member], previous: Sequence[str | None] | None) -> list[str]:
    """The slot table for ``members``, moving as few slots of ``previous`` as balance allows.

    Args:
        members: the ring members; weight 0 owns no slots.
        previous: the last table (owner name per slot), or None to build from nothing.

    Returns:
        The owner of every slot, or ``[]`` when no member has weight.
    """
    live = [m for m in checked_members(members) if m.weight > 0]
    if not live:
        return []
    names = {m.name for m in live}
    table: list[str | None]
    held: Counter[str | None] = Counter(previous or ())  # counted at C speed
    if previous is None or len(previous) != SLOT_COUNT:
        table, held = [None] * SLOT_COUNT, Counter()
    elif names.issuperset(held):  # the common case: every owner is still a member
        table = list(previous)
    else:
        table = [owner if owner in names else None for owner in previous]
        held = Counter(table)
    del held[None]
    want = quotas(live, held)  # type: ignore[arg-type]  # None is no longer a key
    order = slot_order()
    excess = {name: held[name] - want[name] for name in names if held[name] > want[name]}
    if excess:
        for slot in reversed(order):
            owner = table[slot]
            if owner is not None and excess.get(owner, 0) > 0:
                table[slot] = None
                excess[owner] -= 1
    deals = [m.name for m in live for _ in range(max(0, want[m.name] - held[m.name]))]
    if deals:
        free = (slot for slot in order if table[slot] is None)
        for name, slot in zip(deals, free, strict=False):
            table[slot] = name
    if None in table:  # pragma: no cover - the quotas add up to SLOT_COUNT
        raise AssertionError("a slot was left without an owner")
    return table  # type: ignore[return-value]  # every slot has an owner (asserted)


def encode(table: Sequence[str], members: Iterable[Member]) -> str:
    """``table`` as compact text: a digest of the members' sorted live names, then each slot's
    owner as its position among those names (2 bytes a slot, base64)."""
    names = _live_names(members)
    if not table:
        return ""
    position = {name: i for i, name in enumerate(names)}
    packed = array("H", map(position.__getitem__, table))
    if sys.byteorder == "big":  # the stored form is little-endian everywhere
        packed.byteswap()
    return f"{_digest(names)}:{base64.b64encode(packed.tobytes()).decode('ascii')}"


def decode(text: str, members: Iterable[Member]) -> list[str] | None:
    """The table ``encode`` wrote for ``members``, or None when ``text`` is empty or was written
    for another member set (the caller then rebalances from nothing)."""
    names = _live_names(members)
    digest, _, body = text.partition(":")
    if not body or digest != _digest(names):
        return None
    try:
        packed = array("H", base64.b64decode(body, validate=True))
    except ValueError:
        return None
    if sys.byteorder == "big":
        packed.byteswap()
    if len(packed) != SLOT_COUNT or max(packed) >= len(names):
        return None
    return [names[i] for i in packed]


def _live_names(members: Iterable[Member]) -> list[str]:
    return sorted({m.name for m in members if m.weight > 0})


def _digest(names: Sequence[str]) -> str:
    return xxhash.xxh3_64_hexdigest("\x00".join(names).encode())


class SlotRing:
    """An immutable, balanced slot table (see the module docstring)."""

    __slots__ = ("_hash", "_live", "_members", "table")

    def __init__(
        self, members: Iterable[Member], hash_fn: HashFn, previous: Sequence[str | None] | None
    ) -> None:
        """Build the table: ``rebalance(members, previous)``; ``previous`` may be None."""
        self._live = [m for m in checked_members(members) if m.weight > 0]
        self.table: tuple[str, ...] = tuple(rebalance(self._live, previous))
        self._hash = hash_fn
        self._members = tuple(sorted(set(self.table)))

    def encoded(self) -> str:
        """The table as the text ``decode`` reads back for the same members."""
        return encode(self.table, self._live)

    @property
    def members(self) -> tuple[str, ...]:
        return self._members

    def lookup(self, key: str) -> str:
        table = self.table
        if not table:
            raise NoReplicasError("the ring is empty")
        return table[self._hash(key.encode()) & _MASK]

    def candidates(self, key: str, count: int) -> list[str]:
        """The owner, then the owners of the following slots, each once."""
        table = self.table
        if not table:
            raise NoReplicasError("the ring is empty")
        want = min(count, len(self._members))
        start = self._hash(key.encode()) & _MASK
        found: list[str] = []
        for step in range(SLOT_COUNT):
            if len(found) >= want:
                break
            name = table[(start + step) & _MASK]
            if name not in found:
                found.append(name)
        return found

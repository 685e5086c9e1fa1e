"""``Membership`` and ``Replica``: the document the membership store keeps."""

from __future__ import annotations

import pytest

from balancer.hashing import Member
from balancer.state.store import Membership, Replica


def replicas(*names: str) -> list[Replica]:
    return [Replica(n, i, f"127.0.0.1:{9000 + i}") for i, n in enumerate(names, start=1)]


@pytest.mark.parametrize(
    ("indexes", "free"),
    [((), 1), ((1, 2, 3), 4), ((2, 3), 1), ((1, 3), 2), ((3, 1, 2, 5), 4), ((7,), 1), ((1, 1), 2)],
)
def test_free_index_is_the_smallest_unused_positive_int(
    indexes: tuple[int, ...], free: int
) -> None:
    members = tuple(Replica(f"r{n}", i, "h:1") for n, i in enumerate(indexes))
    assert Membership(3, members).free_index() == free


def test_membership_lookups() -> None:
    m = Membership(1, tuple(replicas("a", "b")))
    assert m.names == ["a", "b"]
    assert m.get("b") == Replica("b", 2, "127.0.0.1:9002")
    assert m.get("zz") is None
    assert Replica("a", 4, "h:1", weight=2).member() == Member("a", 4, 2)

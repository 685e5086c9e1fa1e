"""Fixtures of the integration tests: clusters of real balancer processes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, ClusterFactory, running_cluster


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[ClusterFactory]:
    """A cluster of the test's own, on a redis-server of its own; stopped after the test."""
    stack = contextlib.ExitStack()

    def make(count: int, *, persistent: bool, args: Sequence[str] = ()) -> Cluster:
        return stack.enter_context(
            running_cluster(tmp_path, count, persistent=persistent, args=args)
        )

    with stack:
        yield make

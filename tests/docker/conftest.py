"""The Docker client every Docker test uses: one per session, or a skip with the reason."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

docker = pytest.importorskip("docker")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    reason = ""
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # no daemon here: CI starts one (infra/docker/ensure-docker.sh)
        reason = f"no Docker daemon: {exc}"
    if reason:
        # The SDK leaves the socket of its failed version check to the garbage collector;
        # collect it quietly (out of the except block, whose traceback holds it) rather than
        # let its ResourceWarning fail the session (filterwarnings = error).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        pytest.skip(reason)
    yield client
    client.close()

"""The sampled access log: off by default, one JSON line per request when the rate is 1."""

from __future__ import annotations

import json
import logging
import random

import pytest

from balancer.http.accesslog import AccessLog
from tests.conftest import BalancerFactory


async def test_off_by_default(
    make_balancer: BalancerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    lb = await make_balancer()
    with caplog.at_level(logging.INFO, logger="balancer.access"):
        for i in range(20):
            assert (await lb.client.get(f"/home?id={i}")).status == 200
    assert not [r for r in caplog.records if r.name == "balancer.access"]


async def test_every_request_at_rate_one(
    make_balancer: BalancerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    lb = await make_balancer(access_log_sample=1.0)
    with caplog.at_level(logging.INFO, logger="balancer.access"):
        resp = await lb.client.get("/home?id=424242")
        owner = "Server " + (await resp.json())["message"].split()[-1]
        assert (await lb.client.post("/nowhere?x=1", data=b"z")).status == 400
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "balancer.access"]
    assert len(lines) == 2
    first, second = lines
    assert first["method"] == "GET" and first["target"] == "/home?id=424242"
    assert first["replica"] == owner and first["status"] == 200 and first["retries"] == 0
    assert first["client"] == "127.0.0.1" and first["duration_ms"] >= 0
    assert second["method"] == "POST" and second["status"] == 400  # what the client got


def test_sampling_rate_is_respected() -> None:
    log = AccessLog(0.25, random.Random(7))
    hits = sum(log.sampled() for _ in range(20_000))
    assert 4_600 < hits < 5_400
    with pytest.raises(ValueError):
        AccessLog(1.5)

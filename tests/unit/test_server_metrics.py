"""The replica's ``GET /metrics``: counters after known requests, the contract's bytes unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from server.app import METRICS_KEY, create_app, home_body

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def replica() -> AsyncIterator[tuple[aiohttp.ClientSession, web.Application]]:
    app = create_app("7")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:
        yield client, app
    await runner.cleanup()


async def scrape(client: aiohttp.ClientSession, url: str = "/metrics") -> Samples:
    async with client.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def counts(samples: Samples, name: str) -> dict[tuple[str, str], float]:
    return {(dict(k)["path"], dict(k)["code"]): v for (n, k), v in samples.items() if n == name}


async def test_counters_after_known_requests(
    replica: tuple[aiohttp.ClientSession, web.Application],
) -> None:
    client, _ = replica
    for _ in range(5):
        async with client.get("/home?id=1") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/json"
            assert await resp.read() == home_body("7")
    for _ in range(3):
        async with client.get("/heartbeat") as resp:
            assert resp.status == 200
            assert await resp.read() == b""
    for path in ("/nope", "/home/extra"):  # any other path: 404, counted as "other"
        async with client.get(path) as resp:
            assert resp.status == 404
    async with client.post("/home") as resp:  # a known path, a refused method
        assert resp.status == 405

    samples = await scrape(client)
    assert counts(samples, "server_requests_total") == {
        ("/home", "200"): 5,
        ("/heartbeat", "200"): 3,
        ("other", "404"): 2,
        ("/home", "405"): 1,
    }
    duration = {dict(k)["path"]: v for (n, k), v in samples.items() if n.endswith("_count")}
    assert duration == {"/home": 6, "/heartbeat": 3, "other": 2}
    home_inf = (
        "server_request_duration_seconds_bucket",
        frozenset({("path", "/home"), ("le", "+Inf")}),
    )
    assert samples[home_inf] == 6
    assert samples[("server_in_flight", frozenset())] == 0
    assert samples[("server_info", frozenset({("server_id", "7")}))] == 1

    # Scrapes are not counted: the counters are where they were.
    assert counts(await scrape(client), "server_requests_total") == counts(
        samples, "server_requests_total"
    )


async def test_in_flight_counts_requests_being_answered() -> None:
    app = create_app("8")
    metrics = app[METRICS_KEY]

    async def slow(request: web.Request) -> web.Response:
        assert metrics.registry.get_sample_value("server_in_flight") == 1
        return web.Response(text="ok")

    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{port}/slow") as resp:
                assert resp.status == 200
            samples = await scrape(client, f"http://127.0.0.1:{port}/metrics")
        assert samples[("server_in_flight", frozenset())] == 0
        assert (
            samples[("server_requests_total", frozenset({("path", "other"), ("code", "200")}))] == 1
        )
    finally:
        await runner.cleanup()


def test_each_app_has_its_own_registry() -> None:
    one, two = create_app("1"), create_app("2")
    assert one[METRICS_KEY].registry is not two[METRICS_KEY].registry
    one[METRICS_KEY].requests.labels("/home", "200").inc()
    assert (
        two[METRICS_KEY].registry.get_sample_value(
            "server_requests_total", {"path": "/home", "code": "200"}
        )
        is None
    )

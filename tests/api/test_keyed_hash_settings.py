"""``PUT /lb/settings`` never runs a keyed hash (siphash, blake2b) on a public seed, and a
secret key given with a change is never served: not by the settings, status, events or
metrics endpoints, and not in the logs."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from balancer.api.admin import AdminApi
from balancer.hashing.hashes import DEFAULT_SEED
from balancer.http.stats import TrafficStats
from balancer.state.coordination import NoRelay
from tests.conftest import Balancer

SECRET = 0x0123456789ABCDEF_FEDCBA9876543210
READS = ("/lb/settings", "/lb/status", "/lb/events", "/metrics", "/rep", "/lb/lookup?key=k")


async def call(lb: Balancer, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with lb.client.request(method, path, **kwargs) as resp:
        return resp.status, await resp.json()


async def in_force(lb: Balancer) -> dict[str, Any]:
    status, body = await call(lb, "GET", "/lb/settings")
    assert status == 200
    return body["message"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "bodies",
    [
        [{"hash_name": "siphash"}],
        [{"hash_name": "blake2b"}],
        [{"hash_name": "siphash", "hash_seed": DEFAULT_SEED}],
        [{"hash_seed": 987654321}, {"hash_name": "siphash"}],  # xxh3's seed is shown
    ],
)
async def test_a_keyed_hash_without_a_secret_is_refused(
    lb: Balancer, bodies: list[dict[str, Any]]
) -> None:
    *before, refused = bodies
    for body in before:
        assert (await call(lb, "PUT", "/lb/settings", json=body))[0] == 200
    was = await in_force(lb)
    status, err = await call(lb, "PUT", "/lb/settings", json=refused)
    assert status == 400
    assert err["status"] == "failure"
    assert err["message"].startswith(f"<Error> Settings refused: {refused['hash_name']} needs")
    assert "'hash_seed'" in err["message"] and "secrets.randbits" in err["message"]
    assert await in_force(lb) == was  # nothing changed, not even the epoch


async def test_the_leader_refuses_a_handed_over_change_too(lb: Balancer) -> None:
    """A change relayed by a follower is checked again against the store's settings."""
    admin = AdminApi(
        lb.service.manager,
        lb.store,
        lb.service.view,
        lb.runtime,
        TrafficStats(),
        leadership=lb.service.leadership,
        relay=NoRelay(),
    )
    reply = await admin.apply("settings", {"hash_name": "siphash"})
    assert reply.status == 400 and b"needs a secret key" in reply.body
    assert (await in_force(lb))["settings"]["hash_name"] == "xxh3"


async def test_a_secret_key_is_used_and_never_served(
    lb: Balancer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    forms = (str(SECRET), f"{SECRET:x}", f"{SECRET:X}", hex(SECRET))
    put = {"hash_name": "siphash", "hash_seed": SECRET}
    status, body = await call(lb, "PUT", "/lb/settings", json=put)
    assert status == 200 and body["message"]["settings"]["hash_seed"] == "(secret)"
    assert (await lb.store.membership()).settings.hash_seed == SECRET  # type: ignore[union-attr]
    status, body = await call(lb, "PUT", "/lb/settings", json={"algorithm": "maglev"})
    assert status == 200  # the key in force is secret: no new one needed
    assert body["message"]["settings"]["hash_name"] == "siphash"
    for path in READS:
        async with lb.client.get(path) as resp:
            assert resp.status == 200, path
            text = await resp.text()
        assert not [form for form in forms if form in text], path
    # Back to xxh3 without a seed: the default seed, not the old key made public.
    status, body = await call(lb, "PUT", "/lb/settings", json={"hash_name": "xxh3"})
    assert status == 200
    assert (await in_force(lb))["settings"]["hash_seed"] == DEFAULT_SEED
    assert not [form for form in forms if form in caplog.text]

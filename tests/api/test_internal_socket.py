"""The worker protocol lives on its own socket: the admin app has no internal routes at all.

Before, ``/lb/membership`` (which carries a keyed hash's secret seed) and ``/lb/worker-stats``
were routes of the admin app, kept off the public port by a deny list in the data path and an
``X-Forwarded-For`` check in the handlers. Now they exist only on the internal socket.
"""

from __future__ import annotations

import os
import stat

import aiohttp

from tests.conftest import BalancerFactory


def _session(address: str) -> aiohttp.ClientSession:
    connector = aiohttp.UnixConnector(path=address.removeprefix("unix:"))
    return aiohttp.ClientSession("http://local", connector=connector)


async def test_the_admin_socket_has_no_internal_route(make_balancer: BalancerFactory) -> None:
    lb = await make_balancer(replicas=1, hash_name="siphash", hash_seed=12345678901234567890)
    async with _session(lb.service.admin_address) as admin:
        for method, path in (("GET", "/lb/membership"), ("POST", "/lb/worker-stats?id=x")):
            async with admin.request(method, path, data=b"{}") as resp:
                text = await resp.text()
            assert resp.status == 404, (method, path)
            assert "12345678901234567890" not in text
    assert "x" not in lb.service.stats.remote


async def test_the_internal_socket_serves_the_worker_protocol(
    make_balancer: BalancerFactory,
) -> None:
    lb = await make_balancer(replicas=2)
    epoch = lb.service.view.current.epoch
    async with _session(lb.service.internal_address) as internal:
        async with internal.get("/lb/membership") as resp:
            document = await resp.json()
        assert resp.status == 200 and document["epoch"] == epoch
        assert len(document["replicas"]) == 2
        params = {"wait_epoch": str(epoch), "timeout_s": "0.1"}  # no change: returns at timeout
        async with internal.get("/lb/membership", params=params) as resp:
            assert resp.status == 200
        async with internal.get("/lb/membership", params={"wait_epoch": "x"}) as resp:
            assert resp.status == 400
        async with internal.post("/lb/worker-stats?id=7", json={"requests": 1}) as resp:
            assert resp.status == 204
        async with internal.post("/lb/worker-stats?id=8", data=b"[1]") as resp:
            assert resp.status == 400
    assert lb.service.stats.remote == {"7": {"requests": 1}}


async def test_both_sockets_are_in_a_directory_only_this_user_can_enter(
    make_balancer: BalancerFactory,
) -> None:
    lb = await make_balancer(replicas=1)
    for address in (lb.service.admin_address, lb.service.internal_address):
        directory = os.path.dirname(address.removeprefix("unix:"))
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700

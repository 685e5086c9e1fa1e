"""Every row and error string of SPEC.md, byte for byte, on a balancer over in-process replicas."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Balancer

ERR_ADD = (
    b'{"message": "<Error> Length of hostname list is more than newly added instances", '
    b'"status": "failure"}'
)
ERR_RM = (
    b'{"message": "<Error> Length of hostname list is more than removable instances", '
    b'"status": "failure"}'
)


def rep_bytes(names: list[str]) -> bytes:
    quoted = ", ".join(f'"{n}"' for n in names)
    return (
        f'{{"message": {{"N": {len(names)}, "replicas": [{quoted}]}}, "status": "successful"}}'
    ).encode()


async def test_rep_initial_is_byte_exact(lb: Balancer) -> None:
    resp = await lb.client.get("/rep")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert await resp.read() == (
        b'{"message": {"N": 3, "replicas": ["Server 1", "Server 2", "Server 3"]}, '
        b'"status": "successful"}'
    )


async def test_home_is_relayed_byte_exact(lb: Balancer) -> None:
    seen = set()
    for i in range(60):
        resp = await lb.client.get("/home", params={"id": str(100000 + i)})
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        body = await resp.read()
        seen.add(body)
    expected = {
        f'{{"message": "Hello from Server: {i}", "status": "successful"}}'.encode()
        for i in (1, 2, 3)
    }
    assert seen == expected
    # The clients' parsing idioms all give the one-token id.
    message = json.loads(next(iter(seen)))["message"]
    assert message.split()[-1] == message.split(":")[-1].strip() == message.split("Server: ")[1]


async def test_same_key_same_replica(lb: Balancer) -> None:
    bodies = {await (await lb.client.get("/home?id=424242")).read() for _ in range(20)}
    assert len(bodies) == 1
    by_header = {
        await (await lb.client.get("/home", headers={"X-Request-ID": "424242"})).read()
        for _ in range(5)
    }
    assert by_header == bodies


async def test_heartbeat_through_balancer(lb: Balancer) -> None:
    resp = await lb.client.get("/heartbeat")
    assert resp.status == 200
    assert await resp.read() == b""


@pytest.mark.parametrize("path", ["/other", "/home/x", "/", "/a%20b"])
async def test_unknown_path_is_contract_error(lb: Balancer, path: str) -> None:
    resp = await lb.client.get(path)
    assert resp.status == 400
    assert resp.headers["Content-Type"] == "application/json"
    real = {"/a%20b": "/a b"}.get(path, path)
    assert (
        await resp.read()
        == (
            f'{{"message": "<Error> \'{real}\' endpoint does not exist in server replicas", '
            f'"status": "failure"}}'
        ).encode()
    )


async def test_add_example_from_spec(lb: Balancer) -> None:
    resp = await lb.client.post("/add", json={"n": 4, "hostnames": ["S5", "S4", "S10", "S11"]})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    names = ["Server 1", "Server 2", "Server 3", "S5", "S4", "S10", "S11"]
    assert await resp.read() == rep_bytes(names)
    assert await (await lb.client.get("/rep")).read() == rep_bytes(names)
    # The new replicas serve traffic under their own ids.
    ids = set()
    for i in range(200):
        body = await (await lb.client.get(f"/home?id={i}")).json()
        ids.add(body["message"].split()[-1])
    assert ids == {"1", "2", "3", "S5", "S4", "S10", "S11"}


async def test_rm_example_from_spec(lb: Balancer) -> None:
    await lb.client.post("/add", json={"n": 4, "hostnames": ["S5", "S4", "S10", "S11"]})
    resp = await lb.client.delete("/rm", json={"n": 3, "hostnames": ["S5", "S4"]})
    assert resp.status == 200
    names = (await resp.json())["message"]["replicas"]
    assert len(names) == 4 and "S5" not in names and "S4" not in names
    assert await resp.read() == rep_bytes(names)
    assert await lb.names() == names
    assert set(lb.runtime.stopped) == {"S5", "S4"} | (
        {"Server 1", "Server 2", "Server 3", "S10", "S11"} - set(names)
    )


async def test_add_too_many_hostnames_exact(lb: Balancer) -> None:
    resp = await lb.client.post("/add", json={"n": 1, "hostnames": ["S5", "S6"]})
    assert resp.status == 400
    assert resp.headers["Content-Type"] == "application/json"
    assert await resp.read() == ERR_ADD
    assert await lb.names() == ["Server 1", "Server 2", "Server 3"]


@pytest.mark.parametrize("method", ["DELETE", "POST"])
async def test_rm_too_many_hostnames_exact(lb: Balancer, method: str) -> None:
    resp = await lb.client.request(method, "/rm", json={"n": 1, "hostnames": ["Server 1", "S9"]})
    assert resp.status == 400
    assert await resp.read() == ERR_RM
    assert await lb.names() == ["Server 1", "Server 2", "Server 3"]


@pytest.mark.parametrize("hostnames", [None, [], "absent"])
async def test_add_generates_names(lb: Balancer, hostnames: object) -> None:
    body: dict[str, object] = {"n": 2}
    if hostnames != "absent":
        body["hostnames"] = hostnames
    resp = await lb.client.post("/add", json=body)
    assert resp.status == 200
    names = (await resp.json())["message"]["replicas"]
    assert len(names) == 5 and names[:3] == ["Server 1", "Server 2", "Server 3"]
    assert len(set(names)) == 5
    assert all(" " not in n.removeprefix("Server ") for n in names)


async def test_add_fewer_hostnames_than_n(lb: Balancer) -> None:
    resp = await lb.client.post("/add", json={"n": 3, "hostnames": ["web-1"]})
    names = (await resp.json())["message"]["replicas"]
    assert len(names) == 6 and names[3] == "web-1"


async def test_post_rm_alias_and_random_choice(lb: Balancer) -> None:
    resp = await lb.client.post("/rm", json={"n": 2})
    assert resp.status == 200
    names = (await resp.json())["message"]["replicas"]
    assert len(names) == 1 and names[0] in {"Server 1", "Server 2", "Server 3"}
    assert await lb.names() == names


async def test_rm_body_on_delete_with_hostnames_only(lb: Balancer) -> None:
    resp = await lb.client.delete("/rm", json={"n": 1, "hostnames": ["Server 2"]})
    assert await resp.read() == rep_bytes(["Server 1", "Server 3"])


ADD_EDGE_CASES = [
    (b"", "'n' must be a positive integer"),
    (b"{", "Request body is not valid JSON"),
    (b"\xff\xfe", "Request body is not valid JSON"),
    (b"[1, 2]", 'Request body must be a JSON object like {\\"n\\": 1, \\"hostnames\\": []}'),
    (b'{"hostnames": []}', "'n' must be a positive integer"),
    (b'{"n": 0}', "'n' must be a positive integer"),
    (b'{"n": -2}', "'n' must be a positive integer"),
    (b'{"n": "2"}', "'n' must be a positive integer"),
    (b'{"n": true}', "'n' must be a positive integer"),
    (b'{"n": 1.5}', "'n' must be a positive integer"),
    (b'{"n": 1, "hostnames": "S5"}', "'hostnames' must be a list of hostnames"),
    (b'{"n": 2, "hostnames": ["S5", "S5"]}', "Duplicate hostname(s) in request: S5"),
    (b'{"n": 1, "hostnames": ["Server 2"]}', "Replica hostname(s) already in use: Server 2"),
    (b'{"n": 1, "hostnames": ["2"]}', "Replica hostname(s) already in use: 2"),
    (b'{"n": 100, "hostnames": []}', "Adding 100 instances would exceed the limit of 64 replicas"),
]


@pytest.mark.parametrize(("body", "message"), ADD_EDGE_CASES)
async def test_add_edge_cases_change_nothing(lb: Balancer, body: bytes, message: str) -> None:
    resp = await lb.client.post("/add", data=body)
    assert resp.status == 400
    assert resp.headers["Content-Type"] == "application/json"
    assert await resp.read() == f'{{"message": "<Error> {message}", "status": "failure"}}'.encode()
    assert await lb.names() == ["Server 1", "Server 2", "Server 3"]
    assert len(lb.runtime.spawned) == 3


@pytest.mark.parametrize("bad", [123, "", "bad name", "a" * 64, "-lead", "Server ", None, "é"])
async def test_add_invalid_hostname(lb: Balancer, bad: object) -> None:
    resp = await lb.client.post("/add", json={"n": 1, "hostnames": [bad]})
    assert resp.status == 400
    message = (await resp.json())["message"]
    assert message.startswith("<Error> Invalid hostname(s): ")
    assert await lb.names() == ["Server 1", "Server 2", "Server 3"]


RM_EDGE_CASES = [
    (b"{", "Request body is not valid JSON"),
    (b'{"n": 0}', "'n' must be a positive integer"),
    (b'{"n": 4}', "Cannot remove 4 instances: only 3 replicas exist"),
    (b'{"n": 1, "hostnames": ["S9"]}', "Unknown replica hostname(s): S9"),
    (
        b'{"n": 2, "hostnames": ["Server 1", "Server 1"]}',
        "Duplicate hostname(s) in request: Server 1",
    ),
]


@pytest.mark.parametrize(("body", "message"), RM_EDGE_CASES)
async def test_rm_edge_cases_change_nothing(lb: Balancer, body: bytes, message: str) -> None:
    resp = await lb.client.delete("/rm", data=body)
    assert resp.status == 400
    assert await resp.read() == f'{{"message": "<Error> {message}", "status": "failure"}}'.encode()
    assert await lb.names() == ["Server 1", "Server 2", "Server 3"]
    assert lb.runtime.stopped == []


@pytest.mark.parametrize(("method", "path"), [("GET", "/add"), ("GET", "/rm")])
async def test_admin_paths_with_other_methods_fall_through(
    lb: Balancer, method: str, path: str
) -> None:
    resp = await lb.client.request(method, path)
    assert resp.status == 400
    assert (await resp.json())["message"] == (
        f"<Error> '{path}' endpoint does not exist in server replicas"
    )
    assert await lb.names() == ["Server 1", "Server 2", "Server 3"]
